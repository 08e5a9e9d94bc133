using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Vhost.Interop;
using Vhost.Memory;
using Vhost.Protocol;
using Vhost.Rings;

namespace Vhost.Device;

/// <summary>
/// One vhost-user device: a front-end connection and everything it set up (features, memory table,
/// virtqueues). The counterpart of DPDK's `struct virtio_net` reached through a vid.
/// Control-plane state changes only on the connection thread; the data path sees the queues.
/// </summary>
public sealed partial class VhostDevice : IGuestNotifier
{
    private static readonly ConcurrentDictionary<int, VhostDevice> Registry = new();
    private static int _nextId;

    private readonly VhostSocketOptions _options;
    private readonly VhostDeviceOps? _ops;
    private readonly ILogger _logger;
    private readonly Virtqueue[] _queues;
    // replaced by SET_BACKEND_REQ_FD while application threads may send on it: read once, sends tolerate a closed one
    private volatile UnixSocket? _backendChannel;
    private volatile bool _running;
    // SET_STATUS 0 came: not ready for the application again until a new set-up (see SetStatus)
    private bool _resetPending;
    private volatile string? _fault;
    private Action? _requestClose;
    private readonly CancellationTokenSource _closed = new();

    internal VhostDevice(VhostSocketOptions options, ILogger logger, Action? requestClose)
    {
        _options = options;
        _ops = options.Ops;
        _logger = logger;
        _requestClose = requestClose;
        Id = Interlocked.Increment(ref _nextId) - 1;
        _queues = new Virtqueue[options.MaxQueues];
        for (int i = 0; i < _queues.Length; i++) _queues[i] = new Virtqueue(i, logger, this) { Quirks = options.RingQuirks };
        Registry[Id] = this;
    }

    /// <summary>The device id (DPDK's vid), unique in this process.</summary>
    public int Id { get; }

    /// <summary>The socket path this device came from.</summary>
    public string SocketPath => _options.Path;

    /// <summary>Negotiated virtio features (rte_vhost_get_negotiated_features).</summary>
    public ulong Features { get; private set; }

    /// <summary>Negotiated protocol features (rte_vhost_get_negotiated_protocol_features).</summary>
    public ulong ProtocolFeatures { get; private set; }

    /// <summary>Whether the front-end has sent SET_FEATURES since the device was made or reset.</summary>
    public bool FeaturesSet { get; private set; }

    /// <summary>The virtio device status the front-end last set (SET_STATUS); <see cref="VirtioDeviceStatus.None"/> without the STATUS protocol feature.</summary>
    public VirtioDeviceStatus Status { get; private set; }

    /// <summary>The current memory table (rte_vhost_get_mem_table).</summary>
    public GuestMemory Memory { get; private set; } = GuestMemory.Empty;

    /// <summary>
    /// Cancelled once the connection has closed and the device has let go of its memory and fds (a
    /// registration made later runs at once): where device libraries drop what they keep per device.
    /// </summary>
    public CancellationToken Closed => _closed.Token;

    /// <summary>True between new_device and destroy_device.</summary>
    public bool IsRunning => _running;

    /// <summary>Why the device was stopped for bad input, if it was.</summary>
    public string? FaultReason => _fault;

    /// <summary>Every queue slot (rte_vhost_get_vring_num gives the count the front-end configured).</summary>
    public IReadOnlyList<Virtqueue> Queues => _queues;

    /// <summary>Queues the front-end has configured so far.</summary>
    public int ConfiguredQueueCount
    {
        get
        {
            int n = 0;
            for (int i = 0; i < _queues.Length; i++) if (_queues[i].Size > 0 || _queues[i].Address != null) n = i + 1;
            return n;
        }
    }

    /// <summary>MTU the front-end set (NET_SET_MTU), 0 if none.</summary>
    public int Mtu { get; private set; }

    /// <summary>MAC of the last SEND_RARP; the net library broadcasts a RARP for it and clears the flag.</summary>
    public byte[]? RarpMac { get; private set; }

    /// <summary>Set by SEND_RARP; a net data path clears it after announcing.</summary>
    public volatile bool RarpPending;

    /// <summary>Application data (DPDK's rte_vhost_get/set private data, roughly).</summary>
    public object? Context { get; set; }

    /// <summary>The logger of this device's messages and faults (from the socket's <see cref="VhostSocketOptions.LoggerFactory"/>).</summary>
    public ILogger Logger => _logger;

    /// <summary>The live device with id <paramref name="id"/> (DPDK's vid), or null when it has gone.</summary>
    public static VhostDevice? Find(int id) => Registry.TryGetValue(id, out var d) ? d : null;

    /// <summary>Every live device of the process, whatever its socket.</summary>
    public static IReadOnlyCollection<VhostDevice> All => (IReadOnlyCollection<VhostDevice>)Registry.Values;

    /// <summary>Queue <paramref name="id"/> (0-based, up to the socket's <see cref="VhostSocketOptions.MaxQueues"/>).</summary>
    public Virtqueue Queue(int id) => _queues[id];

    /// <summary>Whether the negotiated virtio features include bit <paramref name="bit"/> (see <see cref="VirtioFeature"/>).</summary>
    public bool HasFeature(int bit) => VirtioFeature.Has(Features, bit);

    /// <summary>Whether the negotiated vhost-user protocol features include <paramref name="f"/>.</summary>
    public bool HasProtocolFeature(ProtocolFeature f) => (ProtocolFeatures & (1UL << (int)f)) != 0;

    /// <summary>
    /// rte_vhost_vring_call / rte_vhost_notify_guest: interrupts the guest for a queue now, writing the
    /// call eventfd. Applications that took interrupts over through GuestNotify call this.
    /// </summary>
    public bool NotifyGuest(int queueId)
    {
        if ((uint)queueId >= (uint)_queues.Length) return false;
        var q = _queues[queueId];
        // SET_VRING_CALL may replace the fd meanwhile: a closed one is a failed signal, not an exception
        if (q.CallFd is { } fd)
        {
            bool ok = EventFd.Signal(fd);
            GuestNotified();
            return ok;
        }
        if (q.CallPolling && HasProtocolFeature(ProtocolFeature.InbandNotifications) && _backendChannel is { } channel)
            return SendBackendVringCall(channel, queueId);
        return false;
    }

    /// <summary>
    /// rte_vhost_enable_guest_notification: whether the front-end should kick us for <paramref name="queueId"/>.
    /// A polling application turns kicks off so the front-end never pays an eventfd write per burst; the
    /// choice holds across ring restarts of this device and is applied as soon as the ring runs.
    /// </summary>
    public bool EnableGuestNotification(int queueId, bool enable)
    {
        if ((uint)queueId >= (uint)_queues.Length) return false;
        var q = _queues[queueId];
        using (q.AccessLock.EnterScope()) q.SetNotificationsEnabled(enable);
        return true;
    }

    void IGuestNotifier.NotifyGuest(Virtqueue queue)
    {
        if (_ops is { } ops)
        {
            // the data path's callbacks: inline, because a closure per interrupt would allocate
            try
            {
                if (ops.GuestNotify(this, queue.Index)) return;
            }
            catch (Exception e)
            {
                FaultFromHandler($"the application's GuestNotify callback threw {e.GetType().Name}: {e.Message}", e);
            }
        }
        NotifyGuest(queue.Index);
    }

    void IGuestNotifier.QueueFaulted(Virtqueue queue, string reason) => Fault($"queue {queue.Index}: {reason}");

    /// <summary>Stops the device for bad input: logged once, then the connection is closed.</summary>
    internal void Fault(string reason)
    {
        if (Interlocked.CompareExchange(ref _fault, reason, null) != null) return;
        _logger.LogError("device {Id} ({Path}): {Reason}; closing the connection", Id, SocketPath, reason);
        _requestClose?.Invoke();
    }

    /// <summary>Quiesces every queue (the data path finishes its burst) while <paramref name="change"/> runs.</summary>
    private void WithAllQueuesLocked(Action change)
    {
        int taken = 0;
        try
        {
            for (; taken < _queues.Length; taken++) _queues[taken].AccessLock.Enter();
            change();
        }
        finally
        {
            for (int i = taken - 1; i >= 0; i--) _queues[i].AccessLock.Exit();
        }
    }

    private int QueuesRequired()
    {
        if (_options.QueuesRequiredForReady is { } n) return Math.Min(n, _queues.Length);
        return Math.Max(1, ConfiguredQueueCount);
    }

    /// <summary>DPDK's virtio_is_ready: memory, features and the first queues usable.</summary>
    private bool IsReadyForApplication()
    {
        if (!FeaturesSet || Memory.Count == 0 || _resetPending) return false;
        if (HasProtocolFeature(ProtocolFeature.Status) && Status != VirtioDeviceStatus.None
            && (Status & VirtioDeviceStatus.DriverOk) == 0) return false;
        int need = QueuesRequired();
        for (int i = 0; i < need; i++)
        {
            var q = _queues[i];
            if (!q.IsReady || !q.HasCall) return false;
        }
        return true;
    }

    /// <summary>After each message: announce the device once it became ready.</summary>
    internal void CheckReady()
    {
        if (_running || _fault != null || !IsReadyForApplication()) return;
        bool accepted = _ops is not { } ops || Callback("NewDevice", () => ops.NewDevice(this));
        if (_fault != null) return;
        if (accepted)
        {
            _running = true;
            _logger.LogInformation("device {Id} ({Path}) ready: features 0x{Features:x}, {Regions} memory regions, {Queues} queues",
                Id, SocketPath, Features, Memory.Count, ConfiguredQueueCount);
        }
    }

    /// <summary>destroy_device, if the application knows the device.</summary>
    private void StopRunning(string why)
    {
        if (!_running) return;
        _running = false;
        _logger.LogInformation("device {Id} ({Path}) stopped: {Why}", Id, SocketPath, why);
        StopServingAll();
        if (_ops is { } ops) Callback("DestroyDevice", () => ops.DestroyDevice(this));
    }

    /// <summary>RESET_OWNER / RESET_DEVICE / SET_STATUS 0: back to a fresh device on the same connection.</summary>
    private void ResetState(string why)
    {
        StopRunning(why);
        for (int i = 0; i < _queues.Length; i++) UnwatchKick(i);
        WithAllQueuesLocked(() =>
        {
            foreach (var q in _queues) q.Reset();
            ClearIotlb();
        });
        DropLog();
        Features = 0;
        FeaturesSet = false;
        Status = VirtioDeviceStatus.None;
        _resetPending = false;
    }

    /// <summary>The connection is gone and no work is in flight: release every fd and mapping (see BeginClose).</summary>
    internal void Release()
    {
        _requestClose = null;
        ClosePostcopy();
        StopRunning("connection closed");
        var old = Memory;
        WithAllQueuesLocked(() =>
        {
            foreach (var q in _queues) q.Reset();
            ClearIotlb();
            ReleaseInflightLocked();
            Memory = GuestMemory.Empty;
        });
        DisposeInflight();
        DropLog();
        old.Release();
        _backendChannel?.Dispose();
        _backendChannel = null;
        Registry.TryRemove(Id, out _);
        try
        {
            _closed.Cancel();
        }
        catch (AggregateException e)
        {
            // a library's cleanup must not take the connection thread down with it
            _logger.LogError(e.InnerException, "device {Id} ({Path}): a Closed callback failed", Id, SocketPath);
        }
    }

    private void GuestNotified()
    {
        if (_ops == null) return;
        try
        {
            _ops.GuestNotified(this);
        }
        catch (Exception e)
        {
            FaultFromHandler($"the application's GuestNotified callback threw {e.GetType().Name}: {e.Message}", e);
        }
    }

    private Outcome SetBackendChannel(SafeFd fd)
    {
        var channel = UnixSocket.FromFd(fd);
        // a front-end that stops reading the channel must not stall the sender
        channel.SetNonBlocking();
        var old = _backendChannel;
        _backendChannel = channel;
        old?.Dispose();
        return Outcome.Ok;
    }

    private bool SendBackendVringCall(UnixSocket channel, int queueId)
    {
        Span<byte> msg = stackalloc byte[MessageHeader.Length + Payload.VringState];
        new MessageHeader((uint)VhostUserBackendRequest.VringCall, MessageHeader.Version, Payload.VringState).Write(msg);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(msg[12..], (uint)queueId);
        try
        {
            channel.Send(msg);
            GuestNotified();
            return true;
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            _logger.LogWarning("device {Id}: in-band call failed: {Error}", Id, e.Message);
            return false;
        }
    }

    /// <summary>Tells the front-end the config space changed (VHOST_USER_BACKEND_CONFIG_CHANGE_MSG).</summary>
    public bool SendConfigChange()
    {
        if (_backendChannel is not { } channel || !HasProtocolFeature(ProtocolFeature.BackendReq)) return false;
        Span<byte> msg = stackalloc byte[MessageHeader.Length];
        new MessageHeader((uint)VhostUserBackendRequest.ConfigChangeMsg, MessageHeader.Version, 0).Write(msg);
        try
        {
            channel.Send(msg);
            return true;
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            return false;
        }
    }

    /// <summary>The device's id and socket path, for logs.</summary>
    public override string ToString() => $"vhost device {Id} ({SocketPath})";
}
