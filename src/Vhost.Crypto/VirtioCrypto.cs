using System.Buffers.Binary;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Vhost.Device;
using Vhost.Protocol;
using Vhost.Rings;

namespace Vhost.Crypto;

/// <summary>Limits and choices of a virtio-crypto device.</summary>
public sealed class VirtioCryptoOptions
{
    /// <summary>Data queues (QEMU's cryptodev "queues"; 7.2 gives the back-end only the first).</summary>
    public int Queues { get; init; } = 1;

    /// <summary>The largest source or destination of one request; larger ones fail with VIRTIO_CRYPTO_ERR. Each queue keeps two buffers of it.</summary>
    public int MaxDataLength { get; init; } = 1 << 20;

    /// <summary>The largest AAD of one AEAD request.</summary>
    public int MaxAadLength { get; init; } = 64 << 10;

    /// <summary>Sessions one device may have open at once.</summary>
    public int MaxSessions { get; init; } = 4096;

    /// <summary>Where the device's logger comes from; null: no logging.</summary>
    public ILoggerFactory? LoggerFactory { get; init; }
}

/// <summary>
/// A vhost-user virtio-crypto device (the counterpart of DPDK's lib/vhost/vhost_crypto.c with a cryptodev): sessions
/// over CREATE/CLOSE_CRYPTO_SESSION in QEMU's three layouts, data queues served by .NET's cryptography. QEMU keeps the
/// control queue and the config space itself. One instance serves every connection of a socket.
/// </summary>
public sealed partial class VirtioCrypto : VhostDeviceOps, ICryptoSessionHandler, IDisposable
{
    private readonly VirtioCryptoOptions _options;
    private readonly ILogger _logger;
    private readonly Lock _devicesLock = new();
    private readonly Dictionary<VhostDevice, DeviceState> _devices = [];
    private readonly CryptoStats _retired = new();
    private readonly Meter _meter;
    private long _sessionsCreated;

    private sealed class DeviceState(CryptoSessions sessions, int queues)
    {
        public readonly CryptoSessions Sessions = sessions;
        public readonly CryptoQueue?[] Queues = new CryptoQueue?[queues];
    }

    /// <summary>A device with <paramref name="options"/> (null: the defaults); throws when a limit is out of range.</summary>
    public VirtioCrypto(VirtioCryptoOptions? options = null)
    {
        _options = options ?? new VirtioCryptoOptions();
        if (_options.Queues is < 1 or > 64) throw new ArgumentOutOfRangeException(nameof(options), "Queues must be 1..64");
        if (_options.MaxDataLength is < 16 or > 64 << 20) throw new ArgumentOutOfRangeException(nameof(options), "MaxDataLength must be 16 bytes..64 MiB");
        if (_options.MaxAadLength is < 0 or > 1 << 20) throw new ArgumentOutOfRangeException(nameof(options), "MaxAadLength must be 0..1 MiB");
        _logger = (_options.LoggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Vhost.Crypto");
        _meter = new Meter("Vhost.Crypto");
        _meter.CreateObservableCounter("vhost.crypto.requests", () => TotalStats().Requests, "{request}");
        _meter.CreateObservableCounter("vhost.crypto.bytes", () => TotalStats().Bytes, "By");
        _meter.CreateObservableCounter("vhost.crypto.errors", () => TotalStats().Failed, "{request}");
    }

    /// <summary>The most data queues a front-end may use.</summary>
    public int QueueCount => _options.Queues;

    /// <summary>After new_device has set the queues up (tests and tools wait on it instead of polling).</summary>
    public event Action<VhostDevice>? Started;

    /// <summary>Sessions created since the start, over every device.</summary>
    public long SessionsCreated => Interlocked.Read(ref _sessionsCreated);

    /// <summary>The ring features every device type offers; QEMU 7.2 acknowledges none of them (see <see cref="RingQuirks"/>).</summary>
    public static ulong Features => VhostSocketOptions.DefaultFeatures;

    /// <summary>The core's protocol features with CRYPTO_SESSION, without STATUS (QEMU 7.2's DRIVER_OK cannot be relied on here).</summary>
    public static ulong ProtocolFeatures =>
        (VhostSocketOptions.DefaultProtocolFeatures | (1UL << (int)ProtocolFeature.CryptoSession)) & ~(1UL << (int)ProtocolFeature.Status);

    /// <summary>What QEMU 7.2's cryptodev-vhost-user gets wrong: it sends SET_FEATURES with bit 30 only and no SET_VRING_ENABLE,
    /// while the guest negotiated event idx and indirect descriptors with QEMU.</summary>
    public const RingQuirks Quirks = RingQuirks.LiveOnKick | RingQuirks.AlwaysWriteAvailEvent | RingQuirks.IndirectWithoutNegotiation;

    /// <summary>Socket options that serve this device on <paramref name="path"/>.</summary>
    public VhostSocketOptions CreateSocketOptions(string path, bool client = false, ILoggerFactory? loggerFactory = null,
        Vhost.Runtime.VhostRuntime? runtime = null) => new()
    {
        Runtime = runtime,
        Path = path,
        Client = client,
        Features = Features,
        ProtocolFeatures = ProtocolFeatures,
        MaxQueues = _options.Queues,
        QueueNumReply = _options.Queues,
        QueuesRequiredForReady = null,
        Ops = this,
        CryptoSessions = this,
        RingQuirks = Quirks,
        LoggerFactory = loggerFactory ?? _options.LoggerFactory,
    };

    /// <summary>Counters over every queue of every device, past and present.</summary>
    public CryptoStats TotalStats()
    {
        var total = new CryptoStats();
        lock (_devicesLock)
        {
            total.Add(_retired);
            foreach (var d in _devices.Values)
                foreach (var q in d.Queues) if (q != null) total.Add(q.Stats);
        }
        return total;
    }

    /// <summary>Sessions open on <paramref name="device"/>.</summary>
    public int OpenSessions(VhostDevice device)
    {
        lock (_devicesLock) return _devices.TryGetValue(device, out var d) ? d.Sessions.Count : 0;
    }

    internal IReadOnlyList<CryptoQueue> Workers(VhostDevice device)
    {
        lock (_devicesLock) return _devices.TryGetValue(device, out var d) ? [.. d.Queues.Where(q => q != null).Select(q => q!)] : [];
    }

    /// <summary>A device's state from its first message that needs it (sessions may come before the rings run) until it closes.</summary>
    private DeviceState State(VhostDevice device)
    {
        lock (_devicesLock)
        {
            if (_devices.TryGetValue(device, out var d)) return d;
            d = new DeviceState(new CryptoSessions(_options.MaxSessions), _options.Queues);
            _devices[device] = d;
            device.Closed.Register(static state => { var (c, dev) = ((VirtioCrypto, VhostDevice))state!; c.Forget(dev); }, (this, device));
            return d;
        }
    }

    /// <summary>Serves each data queue the front-end configured, up to <see cref="QueueCount"/>, with a request handler on kicks.</summary>
    public override bool NewDevice(VhostDevice device)
    {
        var d = State(device);
        int n = Math.Min(Math.Max(device.ConfiguredQueueCount, 1), _options.Queues);
        lock (_devicesLock)
        {
            for (int i = 0; i < n; i++) d.Queues[i] ??= new CryptoQueue(device.Queue(i), d.Sessions, _options, _logger);
        }
        for (int i = 0; i < n; i++) device.Serve(i, d.Queues[i]!);
        _logger.LogInformation("crypto device {Id}: serving {Queues} data queue(s), {Sessions} session(s) open", device.Id, n, d.Sessions.Count);
        Started?.Invoke(device);
        return true;
    }

    /// <summary>The connection is gone: its sessions go, its counters join the retired ones.</summary>
    private void Forget(VhostDevice device)
    {
        DeviceState? d;
        lock (_devicesLock)
        {
            if (!_devices.Remove(device, out d)) return;
            foreach (var q in d.Queues) if (q != null) _retired.Add(q.Stats);
        }
        int open = d.Sessions.Count;
        d.Sessions.CloseAll();
        if (open > 0) _logger.LogInformation("crypto device {Id}: {Sessions} session(s) dropped with the connection", device.Id, open);
    }

    string? ICryptoSessionHandler.CreateSession(VhostDevice device, ReadOnlySpan<byte> request, Span<byte> reply)
    {
        if (SessionMessage.Identify(request, out var error) is not { } layout)
        {
            // QEMU takes a negative id in a reply of its own size as a failed create and carries on: so does the device
            SessionMessage.WriteFailedId(reply, -(long)CryptoStatus.Err);
            LogSessionUnreadable(_logger, device.Id, request.Length, error ?? "");
            return null;
        }
        int idAt = SessionMessage.SessionIdOffset(layout);
        long id;
        if (layout == SessionLayout.Qemu81 && SessionMessage.LargeOpCode(request) == VirtioCryptoSpec.AkcipherCreateSession)
        {
            var asym = SessionMessage.ReadAsym(request);
            id = State(device).Sessions.CreateAsym(asym, out error);
        }
        else if (layout == SessionLayout.Qemu81 && !SessionMessage.IsSymCreate(SessionMessage.LargeOpCode(request)))
        {
            error = $"session op code 0x{SessionMessage.LargeOpCode(request):x} is not supported";
            id = -(long)CryptoStatus.NotSupp;
        }
        else
        {
            var info = SessionMessage.Read(request, layout);
            id = State(device).Sessions.Create(info, out error);
        }
        BinaryPrimitives.WriteInt64LittleEndian(reply[idAt..], id);
        if (id < 0)
        {
            LogSessionRefused(_logger, device.Id, layout, (CryptoStatus)(byte)-id, error ?? "");
        }
        else
        {
            Interlocked.Increment(ref _sessionsCreated);
            LogSessionCreated(_logger, device.Id, id, layout);
        }
        return null;
    }

    string? ICryptoSessionHandler.CloseSession(VhostDevice device, ulong sessionId)
    {
        DeviceState? d;
        lock (_devicesLock) _devices.TryGetValue(device, out d);
        if (d == null || !d.Sessions.Close(sessionId)) return "no such session";
        LogSessionClosed(_logger, device.Id, sessionId);
        return null;
    }

    /// <summary>Disposes the device's meter; dispose the sockets that use the device first.</summary>
    public void Dispose() => _meter.Dispose();

    [LoggerMessage(Level = LogLevel.Debug, Message = "crypto device {Id}: session {Session} created ({Layout} layout)")]
    private static partial void LogSessionCreated(ILogger logger, int id, long session, SessionLayout layout);

    [LoggerMessage(Level = LogLevel.Warning, Message = "crypto device {Id}: session refused with {Status} ({Layout} layout): {Reason}")]
    private static partial void LogSessionRefused(ILogger logger, int id, SessionLayout layout, CryptoStatus status, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "crypto device {Id}: CREATE_CRYPTO_SESSION of {Size} bytes refused with Err: {Reason}")]
    private static partial void LogSessionUnreadable(ILogger logger, int id, int size, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "crypto device {Id}: session {Session} closed")]
    private static partial void LogSessionClosed(ILogger logger, int id, ulong session);
}
