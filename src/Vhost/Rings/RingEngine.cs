using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using Vhost.Interop;
using Vhost.Memory;

namespace Vhost.Rings;

/// <summary>
/// A ring engine: what both ring formats share on the data path (indexes, staging of used elements, the bad-chain
/// policy, in-flight bookkeeping, the translation of one buffer). <see cref="SplitRing"/> and <see cref="PackedRing"/>
/// parse their format; <see cref="Virtqueue"/>, the control plane, owns one engine per queue, runs it only under a
/// lease, and gives it the ring windows and the configuration it runs with at each start (fixed until the next).
/// Bad-chain policy: a chain that breaks a rule (loop, bad index, unmapped buffer, nested indirect, ...)
/// is returned to the guest with length 0 and counted in <see cref="BadChains"/>; ring-level corruption
/// (avail index more than a ring ahead, a packed chain that never ends) faults the queue.
/// </summary>
internal abstract partial class RingEngine
{
    internal const ushort DescNext = 1;
    internal const ushort DescWrite = 2;
    internal const ushort DescIndirect = 4;
    protected const int MaxIndirectEntries = Virtqueue.MaxSize;
    protected const uint MaxChainBytes = Virtqueue.MaxChainBytes;

    protected RingEngine(Virtqueue queue)
    {
        Q = queue;
        _logger = queue.Logger;
        Index = queue.Index;
    }

    /// <summary>The control plane this engine runs for (state, faults, interrupts).</summary>
    protected readonly Virtqueue Q;
    protected readonly ILogger _logger;
    protected readonly int Index;

    // what the ring runs with, fixed between a start and the next stop (see Attach)
    protected int Size;
    protected bool EventIdx;
    protected bool AvailEvent;
    protected bool IndirectAllowed;
    protected bool InOrder;
    protected NativeWindow _desc;
    protected NativeWindow _avail;  // split: avail ring; packed: driver event suppression
    protected NativeWindow _used;   // split: used ring; packed: device event suppression
    protected GuestMemory _memory = GuestMemory.Empty;
    internal QueuePolicy _policy;

    /// <summary>Gives the engine its ring windows and configuration (a start, or a remap of a running ring).</summary>
    internal void Attach(NativeWindow desc, NativeWindow avail, NativeWindow used, GuestMemory memory, ulong descGpa, ulong usedGpa)
    {
        _descGpa = descGpa;
        _usedGpa = usedGpa;
        Size = Q.Size;
        EventIdx = Q.EventIdx;
        AvailEvent = Q.WritesAvailEvent;
        IndirectAllowed = Q.IndirectAllowed;
        InOrder = Q.InOrder;
        _desc = desc;
        _avail = avail;
        _used = used;
        _memory = memory;
        _iotlb = Q.Iotlb;
    }

    internal void Detach()
    {
        _desc = _avail = _used = default;
        _memory = GuestMemory.Empty;
    }

    protected void Fault(string reason) => Q.Fault(reason);

    protected void Interrupt() => Q.Interrupt();

    // the rings are attached: a queue resting for IOTLB entries has none to touch
    protected bool Started => Q.RingAttached;

    protected ushort _lastAvail;
    protected ushort _usedIdx;
    // the used index at the last interrupt check, and whether there was one since the ring (re)started
    protected ushort _signalledUsed;
    protected bool _signalledValid;
    protected bool _notifyEnabled = true;

    protected ushort[] _stagedId = [];
    protected uint[] _stagedLen = [];
    protected ushort[] _stagedSlots = [];
    protected int _staged;
    protected bool _stagedOutOfOrder;

    private long _badChains;
    private string? _lastBadChain;

    /// <summary>Chains refused for breaking a rule (returned to the guest with length 0).</summary>
    internal long BadChains => Interlocked.Read(ref _badChains);

    /// <summary>Why the last bad chain was refused.</summary>
    internal string? LastBadChainReason => _lastBadChain;

    /// <summary>The next avail index the back-end will read (split) or slot (packed).</summary>
    internal ushort LastAvailIndex => _lastAvail;

    /// <summary>SET_VRING_BASE, already checked against what was known when it came.</summary>
    internal abstract void SetBase(uint value);

    /// <summary>What GET_VRING_BASE reports.</summary>
    internal abstract uint GetBase();

    /// <summary>Whether the base lies outside a ring of <paramref name="size"/> (checked again at start: SET_VRING_NUM may come later).</summary>
    internal virtual string? CheckBase(int size) => null;

    /// <summary>The ring was attached and starts running: staging sized, indexes from the ring, in-flight work recovered.</summary>
    internal void Start()
    {
        if (_stagedId.Length != Size)
        {
            _stagedId = new ushort[Size];
            _stagedLen = new uint[Size];
            _stagedSlots = new ushort[Size];
        }
        _staged = 0;
        _stagedOutOfOrder = false;
        _evictTuner = default;
        OnStart();
        _signalledUsed = _usedIdx;
        _signalledValid = false;
        RecoverInflight();
        // a choice made before the ring ran (or before a restart) reaches the ring now
        if (!_notifyEnabled) SetNotificationsEnabled(false);
    }

    /// <summary>The format's part of a start, before in-flight recovery.</summary>
    protected virtual void OnStart()
    {
    }

    /// <summary>Chains waiting (split: exact; packed: 0 or 1, "at least one"); only while started.</summary>
    internal abstract int AvailableCount { get; }

    /// <summary>
    /// Whether <see cref="Pop"/> would certainly find nothing: the queue is started, no chain waits to be
    /// resubmitted, and the driver has made nothing available (avail index unmoved, or the next slot's flags
    /// not yet flipped). One read of the ring, so a fast path that came up short can skip the general path
    /// when the ring simply ran dry. Anything odd (an avail index far ahead) counts as not empty, for Pop to report.
    /// </summary>
    internal bool NothingToPop => Started && _resubmitAt >= _resubmitCount && RingDry;

    /// <summary>The driver has made nothing available (one read of the ring).</summary>
    protected abstract bool RingDry { get; }

    /// <summary>Whether Take is evicting now (with Tuned, the tuner's current mode).</summary>
    internal bool EvictingTakenLines =>
        _policy.TakenLineEviction == LineEviction.Always ? CacheLines.IsSupported : TuningTakenLines && _evictTuner.Evict;

    // where eviction is unsupported there is nothing to tune: both modes would be the same
    protected bool TuningTakenLines => _policy.TakenLineEviction == LineEviction.Tuned && CacheLines.IsSupported;

    protected LineEvictionTuner _evictTuner;

    /// <summary>Returns what Take holds (the ring is being disabled or stopped, or the policy changed). Under the access lock.</summary>
    internal virtual void ReturnHeldTaken()
    {
    }

    /// <summary>
    /// Gives back the last chains a Pop returned, unused, so they are popped again later (the chains must be
    /// the most recent ones popped, in order, with nothing pushed for them). Mergeable receive buffers need it:
    /// a frame that does not fit in what is available waits instead of being cut.
    /// </summary>
    internal abstract void Rewind(ReadOnlySpan<DescriptorChain> chains);

    /// <summary>
    /// Pops up to chains.Length available chains whose segments fit into <paramref name="segments"/>.
    /// Bad chains are returned to the guest (length 0) and skipped.
    /// </summary>
    internal int Pop(Span<DescriptorChain> chains, Span<BufferSegment> segments)
    {
        int n = PopCore(chains, segments);
        // only bad chains: an application that flushes only after work would never return them to the guest
        if (n == 0 && _staged > 0) FlushUsed();
        return n;
    }

    protected abstract int PopCore(Span<DescriptorChain> chains, Span<BufferSegment> segments);

    /// <summary>How many buffers Take looks up ahead of taking them (DPDK's batch paths take four).</summary>
    protected const int TakeAhead = 8;

    /// <summary>Whether Fill and Take may run: in-flight tracking, resubmissions and staged elements need the general path's bookkeeping.</summary>
    internal bool FastPathOpen => !_inflightOn && _resubmitAt >= _resubmitCount && _staged == 0 && BitConverter.IsLittleEndian;

    /// <summary>Stages a used element; nothing is visible to the driver until <see cref="FlushUsed"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void PushUsed(in DescriptorChain chain, uint writtenBytes) => PushUsed(chain.Id, chain.SlotCount, writtenBytes);

    internal void PushUsed(ushort id, ushort slotCount, uint writtenBytes)
    {
        if (_staged == _stagedId.Length)
        {
            if (_staged == 0) return; // not started
            FlushUsed();
        }
        int i = _staged++;
        _stagedId[i] = id;
        _stagedLen[i] = writtenBytes;
        _stagedSlots[i] = slotCount;
    }

    /// <summary>Publishes staged used elements and interrupts the guest if it asked for that.</summary>
    internal void FlushUsed()
    {
        if (_staged == 0 || !Started) return;
        FlushCore();
        _staged = 0;
        _stagedOutOfOrder = false;
    }

    /// <summary>Publishes the staged elements (the format's way) and interrupts if the driver asked.</summary>
    protected abstract void FlushCore();

    /// <summary>Asks the driver to kick (true) or not to (false).</summary>
    internal void SetNotificationsEnabled(bool enabled)
    {
        _notifyEnabled = enabled;
        if (!Started) return;
        SetNotificationsCore(enabled);
        // the caller re-checks for work after enabling: our store must be visible before its load
        Interlocked.MemoryBarrier();
    }

    protected abstract void SetNotificationsCore(bool enabled);

    protected void BadChain(string reason)
    {
        Interlocked.Increment(ref _badChains);
        if (_lastBadChain != reason)
        {
            _lastBadChain = reason;
            _logger.LogError("queue {Queue}: bad descriptor chain: {Reason}; returned to the guest unused", Index, reason);
        }
    }

    /// <summary>vring_need_event: has the guest's event index been crossed by the used index moving old → new.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected static bool NeedEvent(ushort eventIdx, ushort newIdx, ushort oldIdx) =>
        (ushort)(newIdx - eventIdx - 1) < (ushort)(newIdx - oldIdx);

    protected enum Walk
    {
        Ok,
        Bad,
        NoRoom,
        /// <summary>An IOVA of the chain has no IOTLB entry yet: the chain stays in the ring until its update comes.</summary>
        Miss,
    }

    /// <summary>
    /// A descriptor as the ring holds it (little-endian). Split: flags then next; packed: id then flags, so
    /// the two 16-bit fields are named by position.
    /// </summary>
#pragma warning disable CS0649 // filled only by reading the ring
    protected struct RawDescriptor
    {
        public ulong Addr;
        public uint Len;
        /// <summary>Split: flags; packed: buffer id.</summary>
        public ushort Word12;
        /// <summary>Split: next; packed: flags.</summary>
        public ushort Word14;
    }
#pragma warning restore CS0649

    /// <summary>
    /// The one-descriptor chain of the fast paths, when its buffer lies inside one region; false sends the
    /// chain down the general walk (which also reports what is wrong with it).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected bool TrySingle(ulong addr, uint len, bool writable, Span<BufferSegment> segments, int at, ushort id, ushort slots, out DescriptorChain chain)
    {
        writable &= !_policy.DeviceReadsOnly;
        NativeWindow w;
        ulong gpa = addr;
        if (len == 0 || len > MaxChainBytes
            || (_iotlb == null ? !_memory.TryTranslate(addr, len, out w) : !TryTranslateIovaWhole(addr, len, writable, out w, out gpa)))
        {
            chain = default;
            return false;
        }
        // only what the device will read: a read prefetch of a buffer the driver reads back after we write it
        // cost 40 % of enqueue's rate on the Fill path (A/B with the prefetch switched every 5 s)
        if (!writable) w.Prefetch();
        segments[at] = new BufferSegment { Window = w, GuestAddress = gpa, IsWritable = writable };
        chain = new DescriptorChain
        {
            Id = id,
            SlotCount = slots,
            SegmentStart = at,
            SegmentCount = 1,
            ReadableSegments = writable ? 0 : 1,
            ReadableBytes = writable ? 0 : len,
            WritableBytes = writable ? len : 0,
        };
        return true;
    }

    /// <summary>Translates one descriptor's buffer into segments (several if it crosses adjacent regions).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected Walk AddBuffer(ulong addr, uint len, bool writable, Span<BufferSegment> segments, ref DescriptorChain chain, ref string? reason)
    {
        if (len == 0) return Walk.Ok;
        if ((ulong)chain.ReadableBytes + chain.WritableBytes + len > MaxChainBytes)
        {
            reason = $"the chain's buffers add up to more than {MaxChainBytes} bytes";
            return Walk.Bad;
        }
        writable &= !_policy.DeviceReadsOnly;
        int at = chain.SegmentCount;
        if (_iotlb != null)
        {
            var r = AddIovaPieces(addr, len, writable, segments, ref chain, ref reason);
            if (r != Walk.Ok) return r;
        }
        else if (_memory.TryTranslate(addr, len, out var w))
        {
            if (at >= segments.Length) return Walk.NoRoom;
            w.Prefetch();
            segments[at] = new BufferSegment { Window = w, GuestAddress = addr, IsWritable = writable };
            chain.SegmentCount = at + 1;
        }
        else
        {
            Span<NativeWindow> pieces = stackalloc NativeWindow[4];
            int n = _memory.TranslateSplit(addr, len, pieces);
            if (n < 0)
            {
                reason = $"buffer 0x{addr:x} (+{len}) is outside guest memory";
                return Walk.Bad;
            }
            if (at + n > segments.Length) return Walk.NoRoom;
            ulong gpa = addr;
            for (int i = 0; i < n; i++)
            {
                segments[at + i] = new BufferSegment { Window = pieces[i], GuestAddress = gpa, IsWritable = writable };
                gpa += pieces[i].Length;
            }
            chain.SegmentCount = at + n;
        }
        if (writable)
        {
            chain.WritableBytes += len;
        }
        else
        {
            if (chain.WritableBytes != 0)
            {
                reason = "a readable descriptor follows a writable one";
                return Walk.Bad;
            }
            chain.ReadableBytes += len;
            chain.ReadableSegments = chain.SegmentCount;
        }
        return Walk.Ok;
    }
}
