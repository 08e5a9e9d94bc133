using Vhost.Interop;

namespace Vhost.Blk;

/// <summary>
/// Threads that run blocking storage I/O so a slow disk never holds up a ring. Work arrives through a
/// lock-free ring; an eventfd in semaphore mode wakes one thread per item.
/// </summary>
public sealed class BlkIoPool : IDisposable
{
    private readonly MpmcRing<(BlkQueue Worker, int Slot)> _work = new(1 << 16);
    private readonly SafeFd _wake = EventSemaphore.Create();
    private readonly Thread[] _threads;
    private volatile bool _stopping;

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
    internal bool TrySubmit(BlkQueue worker, int slot)
    {
        if (!_work.TryEnqueue((worker, slot))) return false;
        EventSemaphore.Post(_wake, 1);
        return true;
    }

    private void Run()
    {
        while (EventSemaphore.Wait(_wake) && !_stopping)
        {
            if (_work.TryDequeue(out var item)) item.Worker.Execute(item.Slot);
        }
    }

    public void Dispose()
    {
        _stopping = true;
        EventSemaphore.Post(_wake, (ulong)_threads.Length);
        foreach (var t in _threads) t.Join();
        _wake.Dispose();
    }
}
