using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using Vhost.Interop;

namespace Vhost.Rings;

/// <summary>
/// The data path shared by both ring formats: staging of used elements, the bad-chain policy and the
/// public entry points, which dispatch once per call (not per descriptor) on the ring format.
/// Bad-chain policy: a chain that breaks a rule (loop, bad index, unmapped buffer, nested indirect, ...)
/// is returned to the guest with length 0 and counted in <see cref="BadChains"/>; ring-level corruption
/// (avail index more than a ring ahead, a packed chain that never ends) faults the queue.
/// </summary>
public sealed partial class Virtqueue
{
    internal const ushort DescNext = 1;
    internal const ushort DescWrite = 2;
    internal const ushort DescIndirect = 4;
    private const int MaxIndirectEntries = MaxSize;

    private ushort _lastAvail;
    private ushort _usedIdx;
    private bool _availWrap = true;
    private bool _usedWrap = true;
    // the used index at the last interrupt check, and whether there was one since the ring (re)started
    private ushort _signalledUsed;
    private bool _signalledValid;
    private bool _notifyEnabled = true;

    private ushort[] _stagedId = [];
    private uint[] _stagedLen = [];
    private ushort[] _stagedSlots = [];
    private int _staged;
    private bool _stagedOutOfOrder;

    private long _badChains;
    private string? _lastBadChain;

    /// <summary>Chains refused for breaking a rule (returned to the guest with length 0).</summary>
    public long BadChains => Interlocked.Read(ref _badChains);

    /// <summary>Why the last bad chain was refused.</summary>
    public string? LastBadChainReason => _lastBadChain;

    /// <summary>The next avail index the back-end will read (split) or slot (packed).</summary>
    public ushort LastAvailIndex => _lastAvail;

    private void SetBaseCore(uint value)
    {
        if (IsPacked)
        {
            _lastAvail = (ushort)(value & 0x7fff);
            _availWrap = ((value >> 15) & 1) != 0;
            uint high = value >> 16;
            _usedIdx = high != 0 ? (ushort)(high & 0x7fff) : _lastAvail;
            _usedWrap = high != 0 ? ((high >> 15) & 1) != 0 : _availWrap;
        }
        else
        {
            _lastAvail = (ushort)value;
            _usedIdx = (ushort)value;
        }
        _signalledUsed = _usedIdx;
        _signalledValid = false;
        _heldCount = 0;
    }

    private uint GetBaseCore() => IsPacked ? (uint)(_lastAvail | (_availWrap ? 0x8000 : 0)) : _lastAvail;

    private void OnStarted()
    {
        if (_stagedId.Length != Size)
        {
            _stagedId = new ushort[Size];
            _stagedLen = new uint[Size];
            _stagedSlots = new ushort[Size];
        }
        _staged = 0;
        _stagedOutOfOrder = false;
        if (!IsPacked)
        {
            // The used index in guest memory is the truth after a reconnect: whatever was popped but never
            // completed by an earlier back-end is offered again (as DPDK does when nothing tracks in-flight).
            ushort used = Volatile.Read(ref _used.Ref<ushort>(2));
            if (used != _lastAvail)
            {
                _logger.LogWarning("queue {Queue}: avail base {Base} but used index {Used}; resuming from the used index", Index, _lastAvail, used);
                _lastAvail = used;
            }
            _usedIdx = used;
        }
        _signalledUsed = _usedIdx;
        _signalledValid = false;
        RecoverInflight();
        // a choice made before the ring ran (or before a restart) reaches the ring now
        if (!_notifyEnabled) SetNotificationsEnabled(false);
    }

    /// <summary>Chains waiting (split: exact; packed: 0 or 1, "at least one").</summary>
    internal int AvailableCount
    {
        get
        {
            if (!Started) return 0;
            if (IsPacked) return PackedHeadAvailable() ? 1 : 0;
            ushort n = (ushort)(Volatile.Read(ref _avail.Ref<ushort>(2)) - _lastAvail);
            return n <= Size ? n : 0;
        }
    }

    internal bool HasAvailable => AvailableCount > 0;

    /// <summary>
    /// Whether <see cref="Pop"/> would certainly find nothing: the queue is started, no chain waits to be
    /// resubmitted, and the driver has made nothing available (avail index unmoved, or the next slot's flags
    /// not yet flipped). One read of the ring, so a fast path that came up short can skip the general path
    /// when the ring simply ran dry. Anything odd (an avail index far ahead) counts as not empty, for Pop to report.
    /// </summary>
    internal bool NothingToPop
    {
        get
        {
            if (!Started || _resubmitAt < _resubmitCount) return false;
            if (IsPacked) return !PackedHeadAvailable();
            return Volatile.Read(ref _avail.Ref<ushort>(2)) == _lastAvail;
        }
    }

    /// <summary>
    /// The device only reads this queue's buffers (a net transmit queue): WRITE flags are ignored and every
    /// buffer counts as readable. Nothing is ever written there, so this is safe, and it is needed: DPDK's
    /// virtio PMD leaves WRITE set on the header entry of its packed indirect tables (DPDK's vhost never looks).
    /// </summary>
    public bool DeviceReadsOnly { get; set; }

    /// <summary>
    /// Whether <see cref="Take"/> evicts from the CPU caches the lines of each buffer it has handed to the taker,
    /// past its first <see cref="TakenLineEvictionSkip"/> bytes (contents kept). Off by default; Vhost.Net sets
    /// <see cref="LineEviction.Tuned"/> on transmit queues when it first serves them. Only Take's one-descriptor
    /// buffers are evicted, not what Pop returns.
    /// </summary>
    public LineEviction TakenLineEviction { get; set; }

    /// <summary>
    /// Bytes at the start of each taken buffer that are not evicted: a device header the driver reads back
    /// (DPDK's virtio compares its net header before writing it) is better left where it is.
    /// </summary>
    public int TakenLineEvictionSkip { get; set; }

    /// <summary>Whether Take is evicting now (with Tuned, the tuner's current mode).</summary>
    public bool EvictingTakenLines =>
        TakenLineEviction == LineEviction.Always ? CacheLines.IsSupported : TuningTakenLines && _evictTuner.Evict;

    // where eviction is unsupported there is nothing to tune: both modes would be the same
    private bool TuningTakenLines => TakenLineEviction == LineEviction.Tuned && CacheLines.IsSupported;

    private LineEvictionTuner _evictTuner;

    /// <summary>
    /// Whether Take may hold back the return of what it took, on a packed ring where one used descriptor returns
    /// a batch (VIRTIO_F_IN_ORDER with <see cref="BatchInOrderUsed"/>): while every Take gets all it asked for, the
    /// used descriptor is written once three quarters of the ring are held instead of once per Take. A Take that
    /// comes up short (the ring ran dry), any other used write, disabling the ring and GET_VRING_BASE return
    /// them at once. Off by default; Vhost.Net sets it on transmit queues. Why: each used descriptor we write is a
    /// ring line the driver must fetch back from our cache before it reuses it, and fewer of them measured 2-5 %
    /// faster for DPDK's virtio-user (docs/benchmarks.md, tenth session).
    /// </summary>
    public bool HoldTakenReturns { get; set; }

    // the batch Take holds: its first slot and that slot's used flags, the last id, how many buffers
    private ushort _heldFirst, _heldFlags, _heldLastId;
    private int _heldCount;

    /// <summary>Returns what Take holds (the ring is being disabled or stopped). Call with the access lock held.</summary>
    internal void ReturnHeldTaken()
    {
        if (_heldCount > 0 && Started) ReturnHeld();
    }

    /// <summary>State a device library keeps per queue (e.g. Vhost.Net's scratch arrays and statistics).</summary>
    public object? UserData { get; set; }

    /// <summary>
    /// Gives back the last chains a Pop returned, unused, so they are popped again later (the chains must be
    /// the most recent ones popped, in order, with nothing pushed for them). Mergeable receive buffers need it:
    /// a frame that does not fit in what is available waits instead of being cut.
    /// </summary>
    internal void Rewind(ReadOnlySpan<DescriptorChain> chains)
    {
        for (int i = chains.Length - 1; i >= 0; i--)
        {
            if (IsPacked)
            {
                int prev = _lastAvail - chains[i].SlotCount;
                if (prev < 0)
                {
                    prev += Size;
                    _availWrap = !_availWrap;
                }
                _lastAvail = (ushort)prev;
                if (_inflightOn) UnmarkInflightPacked(chains[i].Id);
            }
            else
            {
                _lastAvail--;
            }
        }
    }

    /// <summary>
    /// Pops up to chains.Length available chains whose segments fit into <paramref name="segments"/>.
    /// Bad chains are returned to the guest (length 0) and skipped.
    /// </summary>
    internal int Pop(Span<DescriptorChain> chains, Span<BufferSegment> segments)
    {
        if (!MayConsume) return 0;
        int n = IsPacked ? PopPacked(chains, segments) : PopSplit(chains, segments);
        // only bad chains: an application that flushes only after work would never return them to the guest
        if (n == 0 && _staged > 0) FlushUsed();
        return n;
    }

    /// <summary>
    /// The receive fast path, in the shape of DPDK's: one-descriptor writable chains are taken from the
    /// ring, filled by <paramref name="filler"/> and returned in place in one pass, nothing staged (on a packed
    /// ring, used descriptors are marked a ring line at a time, as DPDK's batch path does). Stops at the first item
    /// or buffer it cannot take whole (a chain, an indirect table, a short or untranslatable buffer, an item
    /// the filler declines), which <see cref="Pop"/> then handles and reports. Returns how many of the first
    /// <paramref name="count"/> items were placed; they are published and the guest interrupted if it asked.
    /// </summary>
    internal int Fill<TFiller>(ref TFiller filler, int count) where TFiller : IBufferFiller, allows ref struct
    {
        // in-flight tracking, resubmissions and staged elements need the general path's bookkeeping
        if (!FastPathOpen || DeviceReadsOnly) return 0;
        return IsPacked ? FillPacked(ref filler, count) : FillSplit(ref filler, count);
    }

    /// <summary>
    /// The transmit fast path: one-descriptor readable chains are handed to <paramref name="taker"/> straight
    /// from the ring and returned in place (length 0), nothing staged. Stops where <see cref="Fill"/> would,
    /// or where the taker declines. Returns how many were taken (at most <paramref name="count"/>).
    /// </summary>
    internal int Take<TTaker>(ref TTaker taker, int count) where TTaker : IBufferTaker, allows ref struct
    {
        if (!FastPathOpen) return 0;
        return IsPacked ? TakePacked(ref taker, count) : TakeSplit(ref taker, count);
    }

    /// <summary>How many buffers Take looks up ahead of taking them (DPDK's batch paths take four).</summary>
    private const int TakeAhead = 8;

    private bool FastPathOpen =>
        MayConsume && !_inflightOn && _resubmitAt >= _resubmitCount && _staged == 0 && BitConverter.IsLittleEndian;

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
        if (IsPacked) FlushPacked();
        else FlushSplit();
        _staged = 0;
        _stagedOutOfOrder = false;
    }

    /// <summary>Asks the driver to kick (true) or not to (false).</summary>
    internal void SetNotificationsEnabled(bool enabled)
    {
        _notifyEnabled = enabled;
        if (!Started) return;
        if (IsPacked) SetPackedNotifications(enabled);
        else SetSplitNotifications(enabled);
        // the caller re-checks for work after enabling: our store must be visible before its load
        Interlocked.MemoryBarrier();
    }

    private void BadChain(string reason)
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
    private static bool NeedEvent(ushort eventIdx, ushort newIdx, ushort oldIdx) =>
        (ushort)(newIdx - eventIdx - 1) < (ushort)(newIdx - oldIdx);

    private enum Walk
    {
        Ok,
        Bad,
        NoRoom,
    }

    /// <summary>
    /// A descriptor as the ring holds it (little-endian). Split: flags then next; packed: id then flags, so
    /// the two 16-bit fields are named by position.
    /// </summary>
#pragma warning disable CS0649 // filled only by reading the ring
    private struct RawDescriptor
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
    private bool TrySingle(ulong addr, uint len, bool writable, Span<BufferSegment> segments, int at, ushort id, ushort slots, out DescriptorChain chain)
    {
        if (len == 0 || len > MaxChainBytes || !_memory.TryTranslate(addr, len, out var w))
        {
            chain = default;
            return false;
        }
        writable &= !DeviceReadsOnly;
        // only what the device will read: a read prefetch of a buffer the driver reads back after we write it
        // cost 40 % of enqueue's rate on the Fill path (A/B with the prefetch switched every 5 s)
        if (!writable) w.Prefetch();
        segments[at] = new BufferSegment { Window = w, IsWritable = writable };
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

    /// <summary>
    /// The most bytes one chain may describe. Descriptor lengths are 32-bit and a chain may repeat a buffer, so
    /// without a bound the byte counts wrap, and a segment longer than int.MaxValue has no span; no virtio
    /// device has a use for a chain this long.
    /// </summary>
    public const uint MaxChainBytes = int.MaxValue;

    /// <summary>Translates one descriptor's buffer into segments (several if it crosses adjacent regions).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Walk AddBuffer(ulong addr, uint len, bool writable, Span<BufferSegment> segments, ref DescriptorChain chain, ref string? reason)
    {
        if (len == 0) return Walk.Ok;
        if ((ulong)chain.ReadableBytes + chain.WritableBytes + len > MaxChainBytes)
        {
            reason = $"the chain's buffers add up to more than {MaxChainBytes} bytes";
            return Walk.Bad;
        }
        writable &= !DeviceReadsOnly;
        int at = chain.SegmentCount;
        if (_memory.TryTranslate(addr, len, out var w))
        {
            if (at >= segments.Length) return Walk.NoRoom;
            w.Prefetch();
            segments[at] = new BufferSegment { Window = w, IsWritable = writable };
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
            for (int i = 0; i < n; i++) segments[at + i] = new BufferSegment { Window = pieces[i], IsWritable = writable };
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
