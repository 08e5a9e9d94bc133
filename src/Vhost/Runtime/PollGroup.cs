using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Vhost.Device;

namespace Vhost.Runtime;

/// <summary>
/// Threads that busy-poll queues in polling mode: N queues spread over the M threads the application asks for
/// (DPDK's lcores, OVS's PMD threads), each thread serving its queues in turn, one burst each per pass, so a
/// queue with a flood of work delays the others by one burst at most. No lock is taken per pass: a thread reads
/// its queue set once per pass, and a change swaps the set and waits until the thread has finished the pass that
/// could still see the old one.
/// </summary>
public sealed class PollGroup : IDisposable
{
    private readonly Worker[] _workers;
    private readonly ILogger _logger;
    private readonly Lock _lock = new();

    /// <param name="threads">Polling threads (at least one).</param>
    /// <param name="name">Thread name prefix.</param>
    /// <param name="loggerFactory">Where the group's logger comes from; null: no logging.</param>
    public PollGroup(int threads, string name = "vhost-poll", ILoggerFactory? loggerFactory = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        _logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Vhost.Runtime");
        _workers = new Worker[threads];
        for (int i = 0; i < threads; i++) _workers[i] = new Worker(this, $"{name}{i}");
    }

    /// <summary>Polling threads.</summary>
    public int Threads => _workers.Length;

    /// <summary>Queues served, over every thread.</summary>
    public int QueueCount
    {
        get
        {
            lock (_lock) return _workers.Sum(w => w.Entries.Length);
        }
    }

    internal sealed record Entry(VhostDevice Device, int Queue, IQueueHandler Handler);

    /// <summary>Serves the queue on the least loaded thread until <see cref="Remove"/>.</summary>
    internal void Add(VhostDevice device, int queue, IQueueHandler handler)
    {
        lock (_lock)
        {
            var w = _workers.MinBy(w => w.Entries.Length)!;
            w.Entries = [.. w.Entries, new Entry(device, queue, handler)];
        }
    }

    /// <summary>Stops serving the queue; when this returns, no thread of the group is inside its handler.</summary>
    internal void Remove(VhostDevice device, int queue)
    {
        Worker? owner = null;
        lock (_lock)
        {
            foreach (var w in _workers)
            {
                var left = w.Entries.Where(e => e.Device != device || e.Queue != queue).ToArray();
                if (left.Length == w.Entries.Length) continue;
                w.Entries = left;
                owner = w;
            }
        }
        owner?.WaitForPass();
    }

    private void Faulted(Entry e, Exception error) =>
        e.Device.FaultFromHandler($"queue {e.Queue} handler failed: {error.GetType().Name}: {error.Message}", error);

    /// <summary>Stops the threads; queues still in the group stop being served.</summary>
    public void Dispose()
    {
        foreach (var w in _workers) w.Stop();
    }

    private sealed class Worker
    {
        private readonly PollGroup _group;
        private readonly Thread _thread;
        private volatile bool _stopping;
        private long _passes;

        public volatile Entry[] Entries = [];

        public Worker(PollGroup group, string name)
        {
            _group = group;
            _thread = new Thread(Run) { IsBackground = true, Name = name };
            _thread.Start();
        }

        /// <summary>Waits until the thread has begun a new pass (and so read the current entries); returns at once on itself.</summary>
        public void WaitForPass()
        {
            if (Thread.CurrentThread == _thread || !_thread.IsAlive) return;
            long start = Volatile.Read(ref _passes);
            var spin = new SpinWait();
            while (Volatile.Read(ref _passes) < start + 2 && _thread.IsAlive) spin.SpinOnce();
        }

        private void Run()
        {
            int idlePasses = 0;
            while (!_stopping)
            {
                Volatile.Write(ref _passes, _passes + 1);
                var entries = Entries;
                bool busy = false;
                foreach (var e in entries)
                {
                    try
                    {
                        if (e.Device.Queue(e.Queue).TakeCompletionPending()) busy |= e.Handler.Complete(e.Device, e.Queue);
                        busy |= e.Handler.Serve(e.Device, e.Queue);
                    }
                    catch (Exception error)
                    {
                        _group.Faulted(e, error);
                    }
                }
                if (busy)
                {
                    idlePasses = 0;
                }
                else if (entries.Length == 0)
                {
                    Thread.Sleep(1);
                }
                else
                {
                    if (idlePasses < 1024) idlePasses++;
                    Thread.SpinWait(idlePasses < 1024 ? 1 : 50);
                }
            }
        }

        public void Stop()
        {
            _stopping = true;
            if (Thread.CurrentThread != _thread) _thread.Join();
        }
    }
}
