using Vhost.Interop;

namespace Vhost.Blk;

/// <summary>What the pool runs: a queue's request in one of its slots.</summary>
internal interface IBlkIoWork
{
    void Execute(int slot);
}

/// <summary>
/// Threads that run blocking storage I/O so a slow disk never holds up a ring. Work arrives through a
/// lock-free ring; an eventfd in semaphore mode wakes a thread per item, and a woken thread runs every item it finds.
/// </summary>
public sealed class BlkIoPool : IDisposable
{
    private readonly MpmcRing<(IBlkIoWork Work, int Slot)> _work = new(1 << 16);
    private readonly SafeFd _wake = EventSemaphore.Create();
    private readonly Thread[] _threads;
    private volatile bool _stopping;

    /// <summary>Starts <paramref name="threads"/> I/O threads (at least one).</summary>
    public BlkIoPool(int threads)
    {
        _threads = new Thread[Math.Max(1, threads)];
        for (int i = 0; i < _threads.Length; i++)
        {
            _threads[i] = new Thread(Run) { IsBackground = true, Name = $"vhost-blk-io{i}" };
            _threads[i].Start();
        }
    }

    /// <summary>False when the ring is full: the caller runs the request itself.</summary>
    internal bool TrySubmit(IBlkIoWork work, int slot)
    {
        if (!_work.TryEnqueue((work, slot))) return false;
        EventSemaphore.Post(_wake, 1);
        return true;
    }

    private void Run()
    {
        while (EventSemaphore.Wait(_wake) && !_stopping)
        {
            // drain, not one item per wake: a wake whose item sat behind a cell another producer had claimed but not yet
            // filled finds nothing, and that item is then run by the wake of the producer that fills the cell
            while (_work.TryDequeue(out var item)) item.Work.Execute(item.Slot);
        }
    }

    /// <summary>Stops the threads once they have run what they hold; dispose the devices that use the pool first.</summary>
    public void Dispose()
    {
        _stopping = true;
        EventSemaphore.Post(_wake, (ulong)_threads.Length);
        foreach (var t in _threads) t.Join();
        _wake.Dispose();
    }
}
