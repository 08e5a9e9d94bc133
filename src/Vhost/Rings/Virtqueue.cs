using Microsoft.Extensions.Logging;
using Vhost.Interop;
using Vhost.Memory;
using Vhost.Protocol;

namespace Vhost.Rings;

/// <summary>
/// One virtqueue, split or packed. The control plane (the connection thread) configures it while
/// holding <see cref="AccessLock"/>; a data-path thread takes the same lock once per burst
/// (TryEnter, never per packet), so memory-table changes and ring stops never race a burst.
/// </summary>
public sealed partial class Virtqueue
{
    public const int MaxSize = 32768;

    private readonly ILogger _logger;
    private IGuestNotifier? _notifier;

    // ring windows, valid while Started
    private NativeWindow _desc;
    private NativeWindow _avail;  // split: avail ring; packed: driver event suppression
    private NativeWindow _used;   // split: used ring; packed: device event suppression
    private GuestMemory _memory = GuestMemory.Empty;

    public Virtqueue(int index, ILogger logger, IGuestNotifier? notifier = null)
    {
        Index = index;
        _logger = logger;
        _notifier = notifier;
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
        if (!Started || Faulted)
        {
            AccessLock.Exit();
            burst = default;
            return false;
        }
        burst = new VirtqueueBurst(this);
        return true;
    }

    internal void EndBurst() => AccessLock.Exit();

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

    public int Index { get; }

    /// <summary>Ring size (SET_VRING_NUM); 0 until set.</summary>
    public int Size { get; private set; }

    public bool IsPacked { get; private set; }

    public bool EventIdx { get; private set; }

    public bool IndirectAllowed { get; private set; }

    public bool InOrder { get; private set; }

    public ulong Features { get; private set; }

    /// <summary>SET_VRING_ENABLE state (or enabled at start when protocol features are not negotiated).</summary>
    public bool Enabled { get; internal set; }

    /// <summary>Rings translated and the queue running (between kick and GET_VRING_BASE).</summary>
    public bool Started { get; private set; }

    /// <summary>Set when the front-end broke the ring protocol; the queue moves nothing after that.</summary>
    public bool Faulted { get; private set; }

    public VringAddress? Address { get; private set; }

    internal SafeFd? KickFd { get; private set; }

    internal SafeFd? CallFd { get; private set; }

    internal SafeFd? ErrFd { get; private set; }

    /// <summary>SET_VRING_KICK said "no fd": the front-end will not kick (polling or in-band kicks).</summary>
    public bool KickPolling { get; private set; }

    /// <summary>SET_VRING_CALL said "no fd": interrupts go in-band or nowhere.</summary>
    public bool CallPolling { get; private set; }

    public bool HasKick => KickFd != null || KickPolling;

    public bool HasCall => CallFd != null || CallPolling;

    /// <summary>Has every piece the front-end must send before the queue can run.</summary>
    public bool IsConfigured => Size > 0 && Address != null && HasKick;

    /// <summary>Ready for the data path: configured, started and enabled.</summary>
    public bool IsReady => Started && Enabled && !Faulted;

    public GuestMemory Memory => _memory;

    public ILogger Logger => _logger;

    internal void SetNotifier(IGuestNotifier notifier) => _notifier = notifier;

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
        IndirectAllowed = VirtioFeature.Has(features, VirtioFeature.RingIndirectDesc);
        InOrder = VirtioFeature.Has(features, VirtioFeature.InOrder);
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
        SetBaseCore(value);
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
        if (Translate(memory) is { } error) return error;
        _evictTuner = default;
        Faulted = false;
        Started = true;
        OnStarted();
        return null;
    }

    /// <summary>The ring windows for the current addresses in <paramref name="memory"/>, checked; nothing else changes.</summary>
    private string? Translate(GuestMemory memory)
    {
        if (Address is not { } a) return "ring addresses not set";
        if (Size == 0) return "ring size not set";
        // SET_VRING_NUM, SET_VRING_BASE and SET_FEATURES may come in any order, so each was checked only
        // against what was known then: check the combination the ring will run with
        if (ValidateSize((uint)Size, IsPacked) is { } sizeError) return sizeError;
        if (IsPacked && (LastAvailIndex >= Size || _usedIdx >= Size))
            return $"packed ring base {Math.Max(LastAvailIndex, _usedIdx)} beyond ring size {Size}";
        ulong n = (ulong)Size;
        ulong descLen = 16 * n;
        ulong availLen = IsPacked ? 4 : 6 + 2 * n;
        ulong usedLen = IsPacked ? 4 : 6 + 8 * n;
        if (!memory.TryTranslateUserAddress(a.DescUserAddr, descLen, out var desc))
            return $"descriptor table 0x{a.DescUserAddr:x} (+{descLen}) is not inside guest memory";
        if (!memory.TryTranslateUserAddress(a.AvailUserAddr, availLen, out var avail))
            return $"{(IsPacked ? "driver event area" : "avail ring")} 0x{a.AvailUserAddr:x} (+{availLen}) is not inside guest memory";
        if (!memory.TryTranslateUserAddress(a.UsedUserAddr, usedLen, out var used))
            return $"{(IsPacked ? "device event area" : "used ring")} 0x{a.UsedUserAddr:x} (+{usedLen}) is not inside guest memory";
        if (!IsPacked && (a.DescUserAddr % 16 != 0 || a.AvailUserAddr % 2 != 0 || a.UsedUserAddr % 4 != 0))
            return "ring addresses not aligned as the virtio spec requires";
        _desc = desc;
        _avail = avail;
        _used = used;
        _memory = memory;
        return null;
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
        if (Translate(memory) is { } error)
        {
            Started = false;
            _desc = _avail = _used = default;
            return error;
        }
        return null;
    }

    /// <summary>Stops the queue (GET_VRING_BASE) and returns the base to report.</summary>
    internal uint Stop()
    {
        ReturnHeldTaken();
        FlushUsed();
        uint b = GetBaseCore();
        Started = false;
        _draining = false;
        _desc = _avail = _used = default;
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
        Size = 0;
        Enabled = false;
        Faulted = false;
        _memory = GuestMemory.Empty;
        SetBaseCore(0);
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
