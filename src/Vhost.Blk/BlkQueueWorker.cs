using Microsoft.Extensions.Logging;
using Vhost.Device;
using Vhost.Interop;
using Vhost.Rings;

namespace Vhost.Blk;

/// <summary>
/// The thread of one virtqueue: waits on the kick eventfd (and on completions from the I/O threads),
/// pops bursts under one TryEnter of the queue lock, runs fast requests at once and hands slow ones to
/// the pool, then publishes whatever completed with one FlushUsed. Requests finish in whatever order
/// the storage finishes them.
/// </summary>
internal sealed class BlkQueueWorker : IDisposable
{
    private const int Burst = 32;
    private const int SegmentsPerBurst = 4096;
    /// <summary>Segments a request handed to the pool may have (seg_max plus header and status, with room for splits).</summary>
    private const int SlotSegments = 256;
    /// <summary>Bursts before the thread lets the lock go, so the control plane is never starved.</summary>
    private const int BurstsPerTurn = 16;

    private readonly VirtioBlk _blk;
    private readonly Virtqueue _queue;
    private readonly BlkRequestProcessor _processor;
    private readonly BlkIoPool? _pool;
    private readonly ILogger _logger;
    private readonly DescriptorChain[] _chains = new DescriptorChain[Burst];
    private readonly BufferSegment[] _segments = new BufferSegment[SegmentsPerBurst];

    // pool mode: one slot per request in flight; the free list belongs to this thread alone
    private readonly DescriptorChain[] _slotChain;
    private readonly BufferSegment[][] _slotSegments;
    private readonly uint[] _slotWritten;
    private readonly int[] _free;
    private int _freeCount;
    private readonly MpmcRing<int>? _completed;
    private readonly SafeFd? _completionFd;
    private int _outstanding;

    private readonly Thread _thread;
    private volatile bool _stopping;
    private bool _again;

    public BlkQueueWorker(VirtioBlk blk, Virtqueue queue, BlkIoPool? pool, ILogger logger)
    {
        _blk = blk;
        _queue = queue;
        _pool = pool;
        _logger = logger;
        _processor = new BlkRequestProcessor(blk, logger);
        int slots = pool == null ? 0 : Math.Max(queue.Size, 1);
        _slotChain = new DescriptorChain[slots];
        _slotSegments = new BufferSegment[slots][];
        _slotWritten = new uint[slots];
        _free = new int[slots];
        for (int i = 0; i < slots; i++)
        {
            _slotSegments[i] = new BufferSegment[SlotSegments];
            _free[i] = i;
        }
        _freeCount = slots;
        if (pool != null)
        {
            _completed = new MpmcRing<int>((int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(slots, 2)));
            _completionFd = EventFd.Create(nonBlocking: true);
        }
        _thread = new Thread(Run) { IsBackground = true, Name = $"vhost-blk-q{queue.Index}" };
    }

    public int QueueIndex => _queue.Index;

    /// <summary>Requests handed to the I/O threads and not yet completed.</summary>
    public int InFlight => Volatile.Read(ref _outstanding);

    public BlkQueueStats Stats { get; } = new();

    /// <summary>Bytes allocated serving the ring (queue thread after its first turn, and I/O threads running its requests): the zero-allocation proof.</summary>
    internal long ServiceAllocatedBytes => Interlocked.Read(ref _serviceAllocated);

    private long _serviceAllocated;
    private bool _warm;

    public void Start() => _thread.Start();

    private void Run()
    {
        Span<int> fds = stackalloc int[2];
        while (!_stopping)
        {
            var kick = _queue.KickFd;
            int n = 0;
            if (kick != null && _queue.IsReady) fds[n++] = kick.Fd;
            if (_completionFd != null) fds[n++] = _completionFd.Fd;
            int timeout = _again ? 0 : 100;
            _again = false;
            if (n > 0) Poll.WaitAny(fds[..n], timeout);
            else Thread.Sleep(timeout == 0 ? 1 : 10);
            if (_stopping) break;
            // read both: the kick counter must be cleared or poll would spin, completions are drained below
            if (kick != null && _queue.IsReady) EventFd.TryConsume(kick);
            if (_completionFd != null) EventFd.Consume(_completionFd);
            long before = GC.GetAllocatedBytesForCurrentThread();
            Service();
            // the first turn JITs and initialises statics; what counts is every turn after it
            if (_warm) Interlocked.Add(ref _serviceAllocated, GC.GetAllocatedBytesForCurrentThread() - before);
            _warm = true;
        }
        // the device is going away: everything handed to the pool must come back before guest memory does
        while (Volatile.Read(ref _outstanding) > 0)
        {
            Poll.WaitReadable(_completionFd!, 10);
            EventFd.Consume(_completionFd!);
            using (_queue.AccessLock.EnterScope())
            {
                DrainCompletions();
                _queue.FlushUsed();
            }
        }
    }

    private void Service()
    {
        if (!_queue.AccessLock.TryEnter())
        {
            _again = true;
            return;
        }
        try
        {
            DrainCompletions();
            if (!_queue.IsReady)
            {
                _queue.FlushUsed();
                return;
            }
            _queue.SetNotificationsEnabled(false);
            int bursts = 0;
            while (PopAndRun() > 0)
            {
                _queue.FlushUsed();
                if (++bursts == BurstsPerTurn)
                {
                    _again = true;
                    break;
                }
            }
            _queue.SetNotificationsEnabled(true);
            // a request that arrived while notifications were off would otherwise wait for the next kick
            if (!_again && _queue.HasAvailable && (_pool == null || _freeCount > 0)) _again = true;
            DrainCompletions();
            _queue.FlushUsed();
        }
        finally
        {
            _queue.AccessLock.Exit();
        }
    }

    private int PopAndRun()
    {
        int room = _pool == null ? Burst : Math.Min(Burst, _freeCount);
        if (room == 0) return 0;
        int n = _queue.Pop(_chains.AsSpan(0, room), _segments);
        for (int i = 0; i < n; i++)
        {
            ref readonly var chain = ref _chains[i];
            if (_pool != null && chain.SegmentCount <= SlotSegments && Submit(in chain)) continue;
            uint written = _processor.Process(_queue.Index, in chain, _segments, Stats);
            _queue.PushUsed(in chain, written);
        }
        return n;
    }

    private bool Submit(in DescriptorChain chain)
    {
        int slot = _free[--_freeCount];
        _segments.AsSpan(chain.SegmentStart, chain.SegmentCount).CopyTo(_slotSegments[slot]);
        var c = chain;
        c.SegmentStart = 0;
        _slotChain[slot] = c;
        Interlocked.Increment(ref _outstanding);
        if (_pool!.TrySubmit(this, slot)) return true;
        Interlocked.Decrement(ref _outstanding);
        _free[_freeCount++] = slot;
        return false;
    }

    /// <summary>On an I/O thread: runs the request in <paramref name="slot"/> and hands it back.</summary>
    internal void Execute(int slot)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        _slotWritten[slot] = _processor.Process(_queue.Index, in _slotChain[slot], _slotSegments[slot], Stats);
        Interlocked.Add(ref _serviceAllocated, GC.GetAllocatedBytesForCurrentThread() - before);
        // the ring has a cell for every slot, so this cannot fail
        _completed!.TryEnqueue(slot);
        EventFd.Signal(_completionFd!);
    }

    private void DrainCompletions()
    {
        if (_completed == null) return;
        while (_completed.TryDequeue(out int slot))
        {
            _queue.PushUsed(in _slotChain[slot], _slotWritten[slot]);
            _free[_freeCount++] = slot;
            Interlocked.Decrement(ref _outstanding);
        }
    }

    /// <summary>Stops the thread after every request it started has completed and been published.</summary>
    public void Dispose()
    {
        _stopping = true;
        if (_thread.IsAlive) _thread.Join();
        _completionFd?.Dispose();
        _logger.LogDebug("blk queue {Queue}: worker stopped after {Requests} requests", _queue.Index, Stats.Requests);
    }
}
