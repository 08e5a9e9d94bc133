using System.Numerics;
using Microsoft.Extensions.Logging;
using Vhost.Device;
using Vhost.Rings;
using Vhost.Runtime;

namespace Vhost.Blk;

/// <summary>
/// Serves one virtqueue of a blk device on the runtime: on a kick it pops bursts through a lease, runs fast
/// requests at once and hands slow ones to the I/O pool with a <see cref="QueueWork"/> ticket (which keeps the
/// request's guest memory mapped), and publishes what the I/O threads finished when the runtime calls
/// <see cref="Complete"/>. Requests finish in whatever order the storage finishes them. One per device queue,
/// for the device's life, so work begun before a restart completes after it.
/// </summary>
internal sealed class BlkQueue : IQueueHandler, IBlkIoWork
{
    private const int Burst = 32;
    private const int SegmentsPerBurst = 4096;
    /// <summary>Segments a request handed to the pool may have (seg_max plus header and status, with room for splits).</summary>
    private const int SlotSegments = 256;
    /// <summary>Bursts before the handler lets other devices have the thread.</summary>
    private const int BurstsPerTurn = 16;

    private readonly VirtioBlk _blk;
    private readonly Virtqueue _queue;
    private readonly BlkRequestProcessor _processor;
    private readonly BlkIoPool? _pool;
    private readonly DescriptorChain[] _chains = new DescriptorChain[Burst];
    private readonly BufferSegment[] _segments = new BufferSegment[SegmentsPerBurst];

    // pool mode: a slot per request in flight, made when the ring first has that many in flight (not per ring slot up front);
    // the free list is touched only under the queue's lease
    private Slot[] _slots = [];
    private int[] _free = [];
    private int _freeCount;
    private MpmcRing<int>? _completed;

    private long _serviceAllocated;
    private bool _warm;

    private sealed class Slot
    {
        public DescriptorChain Chain;
        public readonly BufferSegment[] Segments = new BufferSegment[SlotSegments];
        public uint Written;
        public QueueWork Work;
    }

    public BlkQueue(VirtioBlk blk, Virtqueue queue, BlkIoPool? pool, ILogger logger)
    {
        _blk = blk;
        _queue = queue;
        _pool = pool;
        _processor = new BlkRequestProcessor(blk, logger);
    }

    public int QueueIndex => _queue.Index;

    /// <summary>Requests handed to the I/O threads and not yet completed.</summary>
    public int InFlight => _queue.WorkInFlight;

    public BlkQueueStats Stats { get; } = new();

    /// <summary>Bytes allocated serving the ring after its first turn (reactor and I/O threads): the zero-allocation proof.</summary>
    internal long ServiceAllocatedBytes => Interlocked.Read(ref _serviceAllocated);

    public bool Serve(VhostDevice device, int queue)
    {
        // a faulted queue takes no lease again: nothing is left to do until its device closes
        if (!_queue.TryBeginBurst(out var burst)) return _queue.Started && !_queue.Faulted;
        long before = GC.GetAllocatedBytesForCurrentThread();
        bool again = false;
        try
        {
            DrainCompletions(burst);
            burst.SetNotificationsEnabled(false);
            int bursts = 0;
            while (PopAndRun(burst) > 0)
            {
                burst.FlushUsed();
                if (++bursts == BurstsPerTurn)
                {
                    again = true;
                    break;
                }
            }
            burst.SetNotificationsEnabled(true);
            // a request that arrived while notifications were off would otherwise wait for the next kick
            // (a request left waiting for an IOTLB update is not one: the update gives the queue its turn)
            if (!again && burst.HasAvailable && !_queue.AwaitingIotlb && (_pool == null || _freeCount > 0 || _slots.Length < _queue.Size)) again = true;
            DrainCompletions(burst);
            burst.FlushUsed();
        }
        finally
        {
            burst.Dispose();
        }
        CountAllocations(before);
        return again;
    }

    public bool Complete(VhostDevice device, int queue)
    {
        if (!_queue.TryBeginBurst(out var burst))
        {
            // the ring was reset under the work, or faulted (no lease again): nothing can be returned, but the
            // memory it held must be let go, or the device's close waits for it forever
            if (!_queue.Started || _queue.Faulted)
            {
                AbandonCompletions();
                return false;
            }
            return true;
        }
        long before = GC.GetAllocatedBytesForCurrentThread();
        try
        {
            DrainCompletions(burst);
            burst.FlushUsed();
        }
        finally
        {
            burst.Dispose();
        }
        CountAllocations(before);
        return false;
    }

    private void CountAllocations(long before)
    {
        // the first turn JITs and initialises statics; what counts is every turn after it
        if (_warm) Interlocked.Add(ref _serviceAllocated, GC.GetAllocatedBytesForCurrentThread() - before);
        _warm = true;
    }

    private int PopAndRun(VirtqueueBurst burst)
    {
        int room = Burst;
        if (_pool != null)
        {
            if (_freeCount == 0) Grow();
            room = Math.Min(Burst, _freeCount);
        }
        if (room == 0) return 0;
        int n = burst.Pop(_chains.AsSpan(0, room), _segments);
        for (int i = 0; i < n; i++)
        {
            ref readonly var chain = ref _chains[i];
            if (_pool != null && chain.SegmentCount <= SlotSegments && Submit(burst, in chain)) continue;
            uint written = _processor.Process(_queue.Index, in chain, _segments, Stats);
            // every writable byte may have changed (data, then the status byte at the end), whatever the outcome
            burst.LogWritten(in chain, _segments, chain.WritableBytes);
            burst.PushUsed(in chain, written);
        }
        return n;
    }

    /// <summary>More slots, doubling up to the ring's size: requests in flight, not ring slots, decide the memory.</summary>
    private void Grow()
    {
        int have = _slots.Length, size = Math.Max(_queue.Size, 1);
        // completions travel through a ring with a cell for every slot; it is replaced only while nothing is in flight
        if (_completed == null || (_completed.Capacity < size && _queue.WorkInFlight == 0))
            _completed = new MpmcRing<int>((int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(size, 2)));
        int want = Math.Min(Math.Min(size, _completed.Capacity), Math.Max(8, have * 2));
        if (want <= have) return;
        var slots = new Slot[want];
        _slots.CopyTo(slots, 0);
        for (int i = have; i < want; i++) slots[i] = new Slot();
        var free = new int[want];
        _free.AsSpan(0, _freeCount).CopyTo(free);
        for (int i = have; i < want; i++) free[_freeCount++] = i;
        _slots = slots;
        _free = free;
    }

    private bool Submit(VirtqueueBurst burst, in DescriptorChain chain)
    {
        int index = _free[--_freeCount];
        var slot = _slots[index];
        _segments.AsSpan(chain.SegmentStart, chain.SegmentCount).CopyTo(slot.Segments);
        var c = chain;
        c.SegmentStart = 0;
        slot.Chain = c;
        slot.Work = burst.BeginWork(in chain);
        if (_pool!.TrySubmit(this, index)) return true;
        // the pool is full: the caller runs the request itself, under the same burst
        _queue.Abandon(ref slot.Work);
        _free[_freeCount++] = index;
        return false;
    }

    /// <summary>On an I/O thread: runs the request in slot <paramref name="index"/> and hands it back.</summary>
    public void Execute(int index)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        var slot = _slots[index];
        try
        {
            slot.Written = _processor.Process(_queue.Index, in slot.Chain, slot.Segments, Stats);
        }
        catch (Exception e)
        {
            // a storage that throws fails this request and faults its device, never the I/O thread
            slot.Written = 0;
            _queue.Fault($"the storage threw {e.GetType().Name}: {e.Message}");
        }
        Interlocked.Add(ref _serviceAllocated, GC.GetAllocatedBytesForCurrentThread() - before);
        // the ring has a cell for every slot, so this cannot fail
        _completed!.TryEnqueue(index);
        _queue.PostCompletion();
    }

    private void DrainCompletions(VirtqueueBurst burst)
    {
        if (_completed == null) return;
        while (_completed.TryDequeue(out int index))
        {
            var slot = _slots[index];
            // the I/O thread wrote the data and the status: their pages are marked now, after the writes
            burst.LogWritten(in slot.Chain, slot.Segments, slot.Chain.WritableBytes);
            burst.Complete(ref slot.Work, slot.Written);
            _free[_freeCount++] = index;
        }
    }

    private void AbandonCompletions()
    {
        if (_completed == null) return;
        while (_completed.TryDequeue(out int index))
        {
            _queue.Abandon(ref _slots[index].Work);
            _free[_freeCount++] = index;
        }
    }
}
