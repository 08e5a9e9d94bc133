using Vhost.Interop;
using Vhost.Testing.FrontEnd;

namespace Vhost.Testing.Rings;

/// <summary>
/// A minimal in-order virtio driver for one queue: descriptor i always points at buffer i, so offering a
/// burst is a few stores (as in DPDK's in-order virtio PMD) and the benchmark measures the back-end.
/// </summary>
internal sealed class InOrderDriver
{
    private const ushort Next = 1, Write = 2, AvailBit = 1 << 7, UsedBit = 1 << 15;
    private readonly QueueSetup _q;
    private readonly bool _packed;
    private readonly ushort _flags;
    private readonly int _size;
    private readonly uint _length;
    private ushort _avail;
    private int _slot;
    private bool _wrap = true;

    public InOrderDriver(QueueSetup q, FrontEndMemory memory, bool packed, bool writable, uint length)
    {
        _q = q;
        _packed = packed;
        _size = q.Size;
        _length = length;
        _flags = writable ? Write : (ushort)0;
        for (int i = 0; i < _size; i++)
        {
            ulong gpa = memory.Allocate(2048, 64);
            var d = q.Desc.Span((nuint)(16 * i), 16);
            BitConverter.TryWriteBytes(d, gpa);
            BitConverter.TryWriteBytes(d[8..], length);
            BitConverter.TryWriteBytes(d[12..], packed ? (ushort)i : _flags);
            BitConverter.TryWriteBytes(d[14..], packed ? (ushort)UsedBit : (ushort)0); // packed: not available yet
            memory.Span(gpa, 2048).Clear();
            memory.Span(gpa + 12, 1)[0] = 0x02;
        }
        _avail = q.Avail.Ref<ushort>(2);
        // a polling driver (DPDK's virtio PMD) asks for no interrupts: split VRING_AVAIL_F_NO_INTERRUPT,
        // packed driver event area RING_EVENT_FLAGS_DISABLE
        if (packed) q.DriverEvent.Ref<ushort>(2) = 1;
        else q.Avail.Ref<ushort>(0) = 1;
    }

    public void Offer(int count)
    {
        if (_packed)
        {
            for (int i = 0; i < count; i++)
            {
                ref ushort flags = ref _q.Desc.Ref<ushort>((nuint)(16 * _slot + 14));
                _q.Desc.Ref<uint>((nuint)(16 * _slot + 8)) = _length;
                _q.Desc.Ref<ushort>((nuint)(16 * _slot + 12)) = (ushort)_slot;
                Volatile.Write(ref flags, (ushort)(_flags | (_wrap ? AvailBit : UsedBit)));
                if (++_slot == _size) { _slot = 0; _wrap = !_wrap; }
            }
            return;
        }
        int mask = _size - 1;
        for (int i = 0; i < count; i++)
        {
            _q.Avail.Ref<ushort>((nuint)(4 + 2 * (_avail & mask))) = (ushort)(_avail & mask);
            _avail++;
        }
        Volatile.Write(ref _q.Avail.Ref<ushort>(2), _avail);
    }

    /// <summary>Descriptors offered so far (split: the avail index).</summary>
    public ushort Offered => _avail;

    /// <summary>Split: the used index the back-end has published.</summary>
    public ushort UsedIndex => Volatile.Read(ref _q.Used.Ref<ushort>(2));

    /// <summary>Used elements need no bookkeeping in order: the next offer reuses the same descriptors.</summary>
    public void Reclaim()
    {
    }
}
