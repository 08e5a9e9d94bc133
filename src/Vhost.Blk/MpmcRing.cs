namespace Vhost.Blk;

/// <summary>
/// A bounded multi-producer multi-consumer queue on a preallocated array (Vyukov's sequence-numbered
/// cells): no lock and no allocation per item, which is how requests travel between a queue thread and
/// the I/O threads.
/// </summary>
internal sealed class MpmcRing<T>
{
    private readonly T[] _items;
    private readonly long[] _sequence;
    private readonly long _mask;
    private long _enqueue;
    private long _dequeue;

    public MpmcRing(int capacity)
    {
        if (capacity < 2 || (capacity & (capacity - 1)) != 0) throw new ArgumentOutOfRangeException(nameof(capacity), "a power of two");
        _items = new T[capacity];
        _sequence = new long[capacity];
        for (int i = 0; i < capacity; i++) _sequence[i] = i;
        _mask = capacity - 1;
    }

    public int Capacity => _items.Length;

    public bool TryEnqueue(T item)
    {
        long pos = Volatile.Read(ref _enqueue);
        while (true)
        {
            int i = (int)(pos & _mask);
            long diff = Volatile.Read(ref _sequence[i]) - pos;
            if (diff == 0)
            {
                if (Interlocked.CompareExchange(ref _enqueue, pos + 1, pos) == pos)
                {
                    _items[i] = item;
                    Volatile.Write(ref _sequence[i], pos + 1);
                    return true;
                }
                pos = Volatile.Read(ref _enqueue);
            }
            else if (diff < 0)
            {
                return false;
            }
            else
            {
                pos = Volatile.Read(ref _enqueue);
            }
        }
    }

    public bool TryDequeue(out T item)
    {
        long pos = Volatile.Read(ref _dequeue);
        while (true)
        {
            int i = (int)(pos & _mask);
            long diff = Volatile.Read(ref _sequence[i]) - (pos + 1);
            if (diff == 0)
            {
                if (Interlocked.CompareExchange(ref _dequeue, pos + 1, pos) == pos)
                {
                    item = _items[i];
                    _items[i] = default!;
                    Volatile.Write(ref _sequence[i], pos + _mask + 1);
                    return true;
                }
                pos = Volatile.Read(ref _dequeue);
            }
            else if (diff < 0)
            {
                item = default!;
                return false;
            }
            else
            {
                pos = Volatile.Read(ref _dequeue);
            }
        }
    }
}
