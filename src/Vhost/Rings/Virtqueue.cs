using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using Vhost.Interop;
using Vhost.Memory;
using Vhost.Protocol;

namespace Vhost.Rings;

/// <summary>
/// One virtqueue: the control plane's state (size, addresses, fds, features, enable and start state, the memory
/// generation, work in flight) and the ring engine that parses it (<see cref="SplitRing"/> or <see cref="PackedRing"/>,
/// chosen by the features). The control plane (a reactor thread) changes it while holding <see cref="AccessLock"/>;
/// a data-path thread takes the same lock once per burst through a <see cref="VirtqueueBurst"/> lease (TryEnter,
/// never per packet), so memory-table changes and ring stops never race a burst.
/// </summary>
public sealed partial class Virtqueue
{
    /// <summary>The largest ring size virtio allows.</summary>
    public const int MaxSize = 32768;

    /// <summary>
    /// The most bytes one chain may describe. Descriptor lengths are 32-bit and a chain may repeat a buffer, so
    /// without a bound the byte counts wrap, and a segment longer than int.MaxValue has no span; no virtio
    /// device has a use for a chain this long.
    /// </summary>
    public const uint MaxChainBytes = int.MaxValue;

    private readonly ILogger _logger;
    private IGuestNotifier? _notifier;
    private GuestMemory _memory = GuestMemory.Empty;

    // the engine for the negotiated format; replaced only while the queue is stopped
    private RingEngine _ring;
    // what a replaced engine is given again: the last SET_VRING_BASE and the in-flight area
    private uint _base;
    private NativeWindow _inflightRegion;
    private int _inflightQueueSize;
    // the migration's dirty log while the front-end logs, else null (set with the queue quiesced)
    private DirtyLog? _dirtyLog;

    internal Virtqueue(int index, ILogger logger, IGuestNotifier? notifier = null)
    {
        Index = index;
        _logger = logger;
        _notifier = notifier;
        _ring = new SplitRing(this);
    }

    /// <summary>Makes the engine match the negotiated format (a stopped queue only: a running ring keeps its engine).</summary>
    private void MatchEngine()
    {
        if (Started || (_ring is PackedRing) == IsPacked) return;
        var old = _ring;
        _ring = IsPacked ? new PackedRing(this) : new SplitRing(this);
        _ring._policy = old._policy;
        _ring.SetBase(_base);
        _ring.SetInflightRegion(_inflightRegion, _inflightQueueSize);
        _ring.SetLog(_dirtyLog);
    }

    /// <summary>Taken by the control plane for every change and by a <see cref="VirtqueueBurst"/> for its burst.</summary>
    internal QueueLock AccessLock { get; } = new();

    // off-thread work begun and not completed (QueueWork tickets), and whether GET_VRING_BASE waits for it
    private int _workInFlight;
    private volatile bool _draining;

    /// <summary>
    /// Takes the lease for one burst: false when the control plane holds the queue right now or the ring is not
    /// running (not translated, or faulted). A held lease may always complete work; it pops new work only while
    /// the ring is enabled and not being stopped.
    /// </summary>
    public bool TryBeginBurst(out VirtqueueBurst burst)
    {
        if (!AccessLock.TryEnter())
        {
            burst = default;
            return false;
        }
        if (!Started || Faulted || (_parked != Parked.None && !TryUnpark()))
        {
            AccessLock.Exit();
            burst = default;
            return false;
        }
        burst = new VirtqueueBurst(this);
        return true;
    }

    internal void EndBurst()
    {
        // the burst's writes are all made: their pages go into the log before the control plane can look
        _ring.FlushLog();
        AccessLock.Exit();
    }

    /// <summary>Switches the dirty log (null: not logging). Under the access lock: no burst uses the old one afterwards.</summary>
    internal void SetDirtyLog(DirtyLog? log)
    {
        _dirtyLog = log;
        _ring.SetLog(log);
    }

    /// <summary>Whether writes into guest memory are being logged for a migration.</summary>
    public bool Logging => _ring.Logging;

    /// <summary>Under a lease: marks guest-physical [gpa, gpa + length) dirty if the front-end is logging.</summary>
    internal void LogWrite(ulong gpa, ulong length) => _ring.LogGpa(gpa, length);

    /// <summary>Under a lease: the device wrote the first <paramref name="bytes"/> of the chain's writable segments.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void LogWritten(in DescriptorChain chain, ReadOnlySpan<BufferSegment> segments, uint bytes)
    {
        if (_ring.Logging) _ring.LogWritten(chain, segments, bytes);
    }

    /// <summary>The guest-physical address of the used ring (split) or device event area (packed) since the rings were
    /// last translated, for <see cref="Device.VhostDevice.LogUsedRing"/>; null before that and after a reset.</summary>
    internal ulong? UsedRingGuestAddress { get; private set; }

    private int _completionPending;
    private volatile bool _completionsPolled;

    /// <summary>The device's completion eventfd, written when completions are posted for a queue the reactor serves.</summary>
    internal SafeFd? CompletionSignal { get; set; }

    /// <summary>Whether a poll thread picks up completions itself (no eventfd write needed).</summary>
    internal bool CompletionsPolled
    {
        get => _completionsPolled;
        set => _completionsPolled = value;
    }

    /// <summary>
    /// Tells the runtime, from any thread, that off-thread work on this queue finished: the queue's handler is called
    /// (<see cref="Runtime.IQueueHandler.Complete"/>) to publish it. Cheap enough to call once per completion.
    /// </summary>
    public void PostCompletion()
    {
        Volatile.Write(ref _completionPending, 1);
        if (!_completionsPolled && CompletionSignal is { } fd) EventFd.Signal(fd);
    }

    internal bool CompletionPending => Volatile.Read(ref _completionPending) != 0;

    internal bool TakeCompletionPending() => Volatile.Read(ref _completionPending) != 0 && Interlocked.Exchange(ref _completionPending, 0) != 0;

    internal void SetCompletionPending() => Volatile.Write(ref _completionPending, 1);

    /// <summary>Whether a burst may take new chains from the ring now.</summary>
    private bool MayConsume => Started && Enabled && !Faulted && !_draining;

    // the data path, under a lease: dispatched once per call (not per descriptor) to the format's engine
    internal int AvailableCount => _ring.AvailableCount;

    internal bool HasAvailable => AvailableCount > 0;

    /// <summary>
    /// Whether <see cref="Pop"/> would certainly find nothing: the queue is started, no chain waits to be
    /// resubmitted, and the driver has made nothing available (avail index unmoved, or the next slot's flags
    /// not yet flipped). One read of the ring, so a fast path that came up short can skip the general path
    /// when the ring simply ran dry. Anything odd (an avail index far ahead) counts as not empty, for Pop to report.
    /// </summary>
    internal bool NothingToPop => _ring.NothingToPop;

    /// <summary>
    /// Pops up to chains.Length available chains whose segments fit into <paramref name="segments"/>.
    /// Bad chains are returned to the guest (length 0) and skipped.
    /// </summary>
    internal int Pop(Span<DescriptorChain> chains, Span<BufferSegment> segments) => MayConsume ? _ring.Pop(chains, segments) : 0;

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
        var ring = _ring;
        if (!MayConsume || !ring.FastPathOpen || ring._policy.DeviceReadsOnly) return 0;
        return ring is PackedRing packed ? packed.Fill(ref filler, count) : Unsafe.As<SplitRing>(ring).Fill(ref filler, count);
    }

    /// <summary>
    /// The transmit fast path: one-descriptor readable chains are handed to <paramref name="taker"/> straight
    /// from the ring and returned in place (length 0), nothing staged. Stops where <see cref="Fill"/> would,
    /// or where the taker declines. Returns how many were taken (at most <paramref name="count"/>).
    /// </summary>
    internal int Take<TTaker>(ref TTaker taker, int count) where TTaker : IBufferTaker, allows ref struct
    {
        var ring = _ring;
        if (!MayConsume || !ring.FastPathOpen) return 0;
        return ring is PackedRing packed ? packed.Take(ref taker, count) : Unsafe.As<SplitRing>(ring).Take(ref taker, count);
    }

    /// <summary>
    /// Gives back the last chains a Pop returned, unused, so they are popped again later (the chains must be
    /// the most recent ones popped, in order, with nothing pushed for them). Mergeable receive buffers need it:
    /// a frame that does not fit in what is available waits instead of being cut.
    /// </summary>
    internal void Rewind(ReadOnlySpan<DescriptorChain> chains) => _ring.Rewind(chains);

    /// <summary>Stages a used element; nothing is visible to the driver until <see cref="FlushUsed"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void PushUsed(in DescriptorChain chain, uint writtenBytes) => _ring.PushUsed(chain.Id, chain.SlotCount, writtenBytes);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void PushUsed(ushort id, ushort slotCount, uint writtenBytes) => _ring.PushUsed(id, slotCount, writtenBytes);

    /// <summary>Publishes staged used elements and interrupts the guest if it asked for that.</summary>
    internal void FlushUsed() => _ring.FlushUsed();

    /// <summary>Asks the driver to kick (true) or not to (false).</summary>
    internal void SetNotificationsEnabled(bool enabled) => _ring.SetNotificationsEnabled(enabled);

    /// <summary>Returns what Take holds (the ring is being disabled or stopped). Call with the access lock held.</summary>
    internal void ReturnHeldTaken()
    {
        _ring.ReturnHeldTaken();
        _ring.FlushLog();
    }

    /// <summary>Chains refused for breaking a rule (returned to the guest with length 0).</summary>
    public long BadChains => _ring.BadChains;

    /// <summary>Why the last bad chain was refused.</summary>
    public string? LastBadChainReason => _ring.LastBadChainReason;

    /// <summary>The next avail index the back-end will read (split) or slot (packed).</summary>
    public ushort LastAvailIndex => _ring.LastAvailIndex;

    /// <summary>Whether Take is evicting now (with <see cref="LineEviction.Tuned"/>, the tuner's current mode).</summary>
    public bool EvictingTakenLines => _ring.EvictingTakenLines;

    /// <summary>Bytes one queue's in-flight area takes, sized for either ring format (the front-end asks before features are set).</summary>
    public static ulong InflightQueueRegionSize(int queueSize) =>
        ((ulong)(32 + 32 * queueSize) + InflightAlign - 1) & ~(ulong)(InflightAlign - 1);

    private const int InflightAlign = 64;

    /// <summary>Chains found in flight when the queue last started and popped again first.</summary>
    public int InflightResubmitted => _ring.InflightResubmitted;

    /// <summary>Whether pops and completions are being recorded in a shared in-flight area.</summary>
    public bool InflightTracking => _ring.InflightTracking;

    /// <summary>Attaches (or with an empty window detaches) this queue's part of the in-flight area; used at the next start.</summary>
    internal void SetInflightRegion(NativeWindow region, int queueSize)
    {
        _inflightRegion = region;
        _inflightQueueSize = queueSize;
        _ring.SetInflightRegion(region, queueSize);
    }

    /// <summary>Off-thread work begun on this queue and not completed yet.</summary>
    public int WorkInFlight => Volatile.Read(ref _workInFlight);

    internal QueueWork BeginWork(in DescriptorChain chain)
    {
        // the control plane cannot retire the generation while we hold the lease, so this cannot fail
        if (!_memory.TryAcquire()) throw new InvalidOperationException("memory generation retired under a burst");
        Interlocked.Increment(ref _workInFlight);
        return new QueueWork { Memory = _memory, Id = chain.Id, SlotCount = chain.SlotCount };
    }

    /// <summary>Ends a ticket: stages its used element when <paramref name="push"/> (under a lease), releases its generation.</summary>
    internal void CompleteWork(ref QueueWork work, uint writtenBytes, bool push)
    {
        var memory = work.Memory ?? throw new InvalidOperationException("work completed twice");
        if (push) PushUsed(work.Id, work.SlotCount, writtenBytes);
        work.Memory = null;
        memory.Release();
        // the last completion of a drain tells the control plane, which waits on the reactor
        if (Interlocked.Decrement(ref _workInFlight) == 0 && _draining) PostCompletion();
    }

    /// <summary>
    /// Drops a ticket whose queue is gone (the device closed while the work ran): nothing is returned to the
    /// guest, and the generation the work held is released. Needs no lease.
    /// </summary>
    public void Abandon(ref QueueWork work)
    {
        if (work.Memory != null) CompleteWork(ref work, 0, push: false);
    }

    /// <summary>GET_VRING_BASE or a close: no new chains are taken from now on; work in flight may still complete.</summary>
    internal void BeginDrain()
    {
        using (AccessLock.EnterScope()) _draining = true;
    }

    /// <summary>Whether a drain is under way (GET_VRING_BASE waiting, or the device closing).</summary>
    internal bool Draining => _draining;

    /// <summary>The queue's index in its device.</summary>
    public int Index { get; }

    /// <summary>Ring size (SET_VRING_NUM); 0 until set.</summary>
    public int Size { get; private set; }

    /// <summary>Whether the ring has the packed layout (VIRTIO_F_RING_PACKED negotiated).</summary>
    public bool IsPacked { get; private set; }

    /// <summary>Whether kicks and interrupts are suppressed with event indexes (VIRTIO_F_RING_EVENT_IDX negotiated).</summary>
    public bool EventIdx { get; private set; }

    /// <summary>Whether descriptors may point to indirect tables (VIRTIO_F_RING_INDIRECT_DESC negotiated).</summary>
    public bool IndirectAllowed { get; private set; }

    /// <summary>What this queue's front-end is allowed to get wrong (the socket's choice; none by default).</summary>
    public RingQuirks Quirks { get; internal set; }

    /// <summary>The engine writes avail_event: event idx negotiated, or the front-end may use it anyway.</summary>
    internal bool WritesAvailEvent => EventIdx || (Quirks & RingQuirks.AlwaysWriteAvailEvent) != 0;

    /// <summary>Whether buffers are used in the order they were made available (VIRTIO_F_IN_ORDER negotiated).</summary>
    public bool InOrder { get; private set; }

    /// <summary>The virtio features the ring runs with, as negotiated for its device.</summary>
    public ulong Features { get; private set; }

    /// <summary>SET_VRING_ENABLE state (or enabled at start when protocol features are not negotiated).</summary>
    public bool Enabled { get; internal set; }

    /// <summary>Rings translated and the queue running (between kick and GET_VRING_BASE).</summary>
    public bool Started { get; private set; }

    /// <summary>Set when the front-end broke the ring protocol; the queue moves nothing after that.</summary>
    public bool Faulted { get; private set; }

    internal VringAddress? Address { get; private set; }

    internal SafeFd? KickFd { get; private set; }

    internal SafeFd? CallFd { get; private set; }

    internal SafeFd? ErrFd { get; private set; }

    /// <summary>SET_VRING_KICK said "no fd": the front-end will not kick (polling or in-band kicks).</summary>
    public bool KickPolling { get; private set; }

    /// <summary>SET_VRING_CALL said "no fd": interrupts go in-band or nowhere.</summary>
    public bool CallPolling { get; private set; }

    /// <summary>Whether the front-end has sent SET_VRING_KICK, with an fd or the no-fd flag.</summary>
    public bool HasKick => KickFd != null || KickPolling;

    /// <summary>Whether the front-end has sent SET_VRING_CALL, with an fd or the no-fd flag.</summary>
    public bool HasCall => CallFd != null || CallPolling;

    /// <summary>Has every piece the front-end must send before the queue can run.</summary>
    public bool IsConfigured => Size > 0 && Address != null && HasKick;

    /// <summary>Ready for the data path: configured, started and enabled.</summary>
    public bool IsReady => Started && Enabled && !Faulted;

    /// <summary>The memory generation the ring runs on; hold it only under a lease or after <see cref="GuestMemory.TryAcquire"/>.</summary>
    public GuestMemory Memory => _memory;

    /// <summary>The logger of the queue's device.</summary>
    public ILogger Logger => _logger;

    internal void SetNotifier(IGuestNotifier notifier) => _notifier = notifier;

    /// <summary>The device type's data-path choices for this queue (set under a lease: <see cref="VirtqueueBurst.Policy"/>).</summary>
    public QueuePolicy Policy
    {
        get => _ring._policy;
        internal set
        {
            // what Take held under the old policy goes back to the guest before the new one applies
            if (!value.HoldTakenReturns) ReturnHeldTaken();
            _ring._policy = value;
        }
    }

    // QueueLocal<T> slots: read without a lock, stored under _localsLock (once per queue and kind of state)
    private static int s_localSlots;
    private object?[] _locals = [];
    private readonly Lock _localsLock = new();

    internal static int AllocateLocalSlot() => Interlocked.Increment(ref s_localSlots) - 1;

    internal object? GetLocal(int slot)
    {
        var locals = Volatile.Read(ref _locals);
        return (uint)slot < (uint)locals.Length ? Volatile.Read(ref locals[slot]) : null;
    }

    internal object GetOrAddLocal(int slot, Func<Virtqueue, object, object> create, object state)
    {
        using (_localsLock.EnterScope())
        {
            if (GetLocal(slot) is { } found) return found;
            var value = create(this, state);
            var locals = _locals;
            if (slot >= locals.Length)
            {
                Array.Resize(ref locals, Math.Max(slot + 1, 2 * locals.Length));
                Volatile.Write(ref _locals, locals);
            }
            Volatile.Write(ref locals[slot], value);
            return value;
        }
    }

    internal static string? ValidateSize(uint num, bool packed)
    {
        if (num == 0) return "ring size 0";
        if (num > MaxSize) return $"ring size {num} above {MaxSize}";
        if (!packed && (num & (num - 1)) != 0) return $"split ring size {num} is not a power of two";
        return null;
    }

    /// <summary>Applies the negotiated features (SET_FEATURES).</summary>
    internal void SetFeatures(ulong features)
    {
        Features = features;
        IsPacked = VirtioFeature.Has(features, VirtioFeature.RingPacked);
        EventIdx = VirtioFeature.Has(features, VirtioFeature.RingEventIdx);
        IndirectAllowed = VirtioFeature.Has(features, VirtioFeature.RingIndirectDesc) || (Quirks & RingQuirks.IndirectWithoutNegotiation) != 0;
        InOrder = VirtioFeature.Has(features, VirtioFeature.InOrder);
        MatchEngine();
    }

    internal string? SetSize(uint num)
    {
        var error = ValidateSize(num, IsPacked);
        if (error != null) return error;
        Size = (int)num;
        return null;
    }

    internal void SetAddress(VringAddress address) => Address = address;

    /// <summary>SET_VRING_BASE. Packed: bits 0-14 index, bit 15 wrap counter.</summary>
    internal string? SetBase(uint value)
    {
        if (IsPacked)
        {
            uint idx = value & 0x7fff;
            if (Size > 0 && idx >= Size) return $"packed ring base {idx} beyond ring size {Size}";
            if ((value >> 16) != 0)
            {
                // the front-end may put used index/wrap in the upper half (as DPDK does)
                uint usedIdx = (value >> 16) & 0x7fff;
                if (Size > 0 && usedIdx >= Size) return $"packed ring used base {usedIdx} beyond ring size {Size}";
            }
        }
        else if (value > 0xffff)
        {
            return $"split ring base {value} above 65535";
        }
        _base = value;
        _ring.SetBase(value);
        return null;
    }

    /// <summary>Sets a fd (takes ownership), disposing the previous one.</summary>
    internal void SetKick(SafeFd? fd, bool polling)
    {
        KickFd?.Dispose();
        KickFd = fd;
        KickPolling = polling;
    }

    internal void SetCall(SafeFd? fd, bool polling)
    {
        CallFd?.Dispose();
        CallFd = fd;
        CallPolling = polling;
    }

    internal void SetErr(SafeFd? fd)
    {
        ErrFd?.Dispose();
        ErrFd = fd;
    }

    /// <summary>Translates the rings in <paramref name="memory"/>; the queue runs after this returns null.</summary>
    internal string? Start(GuestMemory memory)
    {
        MatchEngine();
        if (Translate(memory, out bool missed) is { } error) return error;
        Faulted = false;
        Started = true;
        if (missed)
        {
            // under a vIOMMU the rings wait for their IOTLB entries: the engine starts when they come
            _memory = memory;
            _parked = Parked.Start;
            return null;
        }
        _parked = Parked.None;
        _ring.Start();
        return null;
    }

    /// <summary>The ring windows for the current addresses in <paramref name="memory"/>, checked; nothing else changes.</summary>
    private string? Translate(GuestMemory memory, out bool missed)
    {
        missed = false;
        if (Address is not { } a) return "ring addresses not set";
        if (Size == 0) return "ring size not set";
        // SET_VRING_NUM, SET_VRING_BASE and SET_FEATURES may come in any order, so each was checked only
        // against what was known then: check the combination the ring will run with
        if (ValidateSize((uint)Size, IsPacked) is { } sizeError) return sizeError;
        if (_ring.CheckBase(Size) is { } baseError) return baseError;
        ulong n = (ulong)Size;
        ulong descLen = 16 * n;
        ulong availLen = IsPacked ? 4 : 6 + 2 * n;
        ulong usedLen = IsPacked ? 4 : 6 + 8 * n;
        ulong descUva = a.DescUserAddr, availUva = a.AvailUserAddr, usedUva = a.UsedUserAddr;
        if (Iotlb is { } tlb)
        {
            // under a vIOMMU the three addresses are IOVAs: each goes through the IOTLB first
            string? bad = null;
            descUva = RingIova(tlb, a.DescUserAddr, descLen, IsPacked ? IotlbAccess.ReadWrite : IotlbAccess.Read, "descriptor table", ref missed, ref bad);
            availUva = RingIova(tlb, a.AvailUserAddr, availLen, IotlbAccess.Read, IsPacked ? "driver event area" : "avail ring", ref missed, ref bad);
            usedUva = RingIova(tlb, a.UsedUserAddr, usedLen, IotlbAccess.Write, IsPacked ? "device event area" : "used ring", ref missed, ref bad);
            if (bad != null) return bad;
            if (missed) return null;
        }
        if (!memory.TryTranslateUserAddress(descUva, descLen, out var desc))
            return $"descriptor table 0x{descUva:x} (+{descLen}) is not inside guest memory";
        if (!memory.TryTranslateUserAddress(availUva, availLen, out var avail))
            return $"{(IsPacked ? "driver event area" : "avail ring")} 0x{availUva:x} (+{availLen}) is not inside guest memory";
        if (!memory.TryTranslateUserAddress(usedUva, usedLen, out var used))
            return $"{(IsPacked ? "device event area" : "used ring")} 0x{usedUva:x} (+{usedLen}) is not inside guest memory";
        if (!IsPacked && (a.DescUserAddr % 16 != 0 || a.AvailUserAddr % 2 != 0 || a.UsedUserAddr % 4 != 0))
            return "ring addresses not aligned as the virtio spec requires";
        // what the dirty log marks for ring writes: the front-end's used ring log address when it gives one
        // (VHOST_VRING_F_LOG; an IOVA under a vIOMMU, so there the translated ring's own address serves), else
        // where the ring lies in guest-physical space
        memory.TryUserToGuestPhys(descUva, out ulong descGpa);
        ulong usedGpa;
        if (Iotlb != null)
        {
            memory.TryUserToGuestPhys(usedUva, out usedGpa);
        }
        else if ((a.Flags & VringAddress.FlagLog) != 0)
        {
            if (!memory.TryTranslate(a.LogGuestAddr, usedLen, out _))
                return $"used ring log address 0x{a.LogGuestAddr:x} (+{usedLen}) is not inside guest memory";
            usedGpa = a.LogGuestAddr;
        }
        else
        {
            memory.TryUserToGuestPhys(a.UsedUserAddr, out usedGpa);
        }
        UsedRingGuestAddress = usedGpa;
        if (Iotlb != null)
            _logger.LogDebug("queue {Queue}: rings at IOVAs 0x{Desc:x} 0x{Avail:x} 0x{Used:x}, guest-physical 0x{DescGpa:x} and 0x{UsedGpa:x}",
                Index, a.DescUserAddr, a.AvailUserAddr, a.UsedUserAddr, descGpa, usedGpa);
        _ring.Attach(desc, avail, used, memory, descGpa, usedGpa);
        _memory = memory;
        return null;
    }

    /// <summary>A ring's IOVA range to a front-end address through the IOTLB; asks for what is missing.</summary>
    private ulong RingIova(IoTlb tlb, ulong iova, ulong length, IotlbAccess need, string what, ref bool missed, ref string? bad)
    {
        ulong got = tlb.Translate(iova, length, need, out ulong uva, out ulong missAt, out bool denied);
        if (got == length) return uva;
        if (got > 0 && (tlb.Translate(missAt, 1, need, out _, out _, out denied) > 0 || denied))
        {
            bad ??= $"{what} at IOVA 0x{iova:x} (+{length}) is not contiguous in front-end memory";
            return 0;
        }
        if (denied)
        {
            bad ??= $"{what} at IOVA 0x{iova:x} is mapped without the access the device needs";
            return 0;
        }
        if (tlb.NoteMiss(missAt, need, Environment.TickCount64)) SendIotlbMiss(missAt, need);
        missed = true;
        AwaitingIotlb = true;
        return 0;
    }

    /// <summary>
    /// The memory table or the ring addresses changed while the queue was running: translate again and go on
    /// where the ring was. Indexes, staged and held used elements and in-flight tracking are kept: requests
    /// popped before the change are still being worked on and complete after it. A ring that no longer
    /// translates stops (its base is kept for GET_VRING_BASE).
    /// </summary>
    internal string? Remap(GuestMemory memory)
    {
        _memory = memory;
        if (!Started) return null;
        if (Translate(memory, out bool missed) is { } error)
        {
            Started = false;
            _parked = Parked.None;
            _ring.Detach();
            return error;
        }
        if (missed)
        {
            if (_parked == Parked.None)
            {
                // an invalidation took the rings' IOTLB entries: nothing taken stays out, and the ring rests,
                // indexes and staged used elements kept, until the entries come back
                _ring.ReturnHeldTaken();
                _ring.FlushLog();
                _parked = Parked.Resume;
                _ring.Detach();
            }
            return null;
        }
        var was = _parked;
        _parked = Parked.None;
        if (was == Parked.Start) _ring.Start();
        return null;
    }

    /// <summary>Stops the queue (GET_VRING_BASE) and returns the base to report.</summary>
    internal uint Stop()
    {
        ReturnHeldTaken();
        FlushUsed();
        // GET_VRING_BASE: every page written so far is in the log before the reply
        _ring.FlushLog();
        uint b = _ring.GetBase();
        _base = b;
        Started = false;
        _parked = Parked.None;
        _draining = false;
        _ring.Detach();
        return b;
    }

    /// <summary>Back to the state of a new queue (RESET_OWNER, RESET_DEVICE, disconnect).</summary>
    internal void Reset()
    {
        Stop();
        SetKick(null, false);
        SetCall(null, false);
        SetErr(null);
        Address = null;
        UsedRingGuestAddress = null;
        Size = 0;
        Enabled = false;
        Faulted = false;
        _memory = GuestMemory.Empty;
        _base = 0;
        _ring.SetBase(0);
    }

    /// <summary>Marks the queue broken; the device is told once and stops it.</summary>
    internal void Fault(string reason)
    {
        if (Faulted) return;
        Faulted = true;
        // a device logs the fault itself with its id and path; one line per refusal keeps logs readable
        if (_notifier == null) _logger.LogError("queue {Queue}: {Reason}; stopping the device", Index, reason);
        else _notifier.QueueFaulted(this, reason);
    }

    /// <summary>Writes the call eventfd (or the application's notify hook decides).</summary>
    internal void Interrupt() => _notifier?.NotifyGuest(this);

    /// <summary>Raw kick of the call fd, used by the device after the application's hook declined.</summary>
    internal bool SignalCallFd() => CallFd is { } fd && EventFd.Signal(fd);
}
