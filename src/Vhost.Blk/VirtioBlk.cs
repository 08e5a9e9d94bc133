using System.Buffers.Binary;
using System.Diagnostics.Metrics;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Vhost.Device;
using Vhost.Protocol;

namespace Vhost.Blk;

/// <summary>Limits and choices of a virtio-blk device.</summary>
public sealed class VirtioBlkOptions
{
    /// <summary>Request queues (num_queues in the config space; GET_QUEUE_NUM).</summary>
    public int Queues { get; init; } = 1;

    /// <summary>Refuse writes even if the storage allows them (VIRTIO_BLK_F_RO).</summary>
    public bool ReadOnly { get; init; }

    /// <summary>I/O threads for storage that blocks (files, block devices); 0 runs everything on the event threads.</summary>
    public int IoThreads { get; init; } = 2;

    /// <summary>An I/O pool shared with other devices (the caller disposes it); null: the device makes its own of <see cref="IoThreads"/>.</summary>
    public BlkIoPool? IoPool { get; init; }

    /// <summary>seg_max: data segments per request the driver may use.</summary>
    public uint SegMax { get; init; } = 126;

    /// <summary>size_max: bytes per segment.</summary>
    public uint SizeMax { get; init; } = 1 << 20;

    /// <summary>max_discard_sectors: sectors one discard range may cover.</summary>
    public uint MaxDiscardSectors { get; init; } = 1 << 22;

    /// <summary>max_discard_seg: ranges one discard request may carry (up to <see cref="VirtioBlk.MaxRangeSegments"/>).</summary>
    public uint MaxDiscardSegments { get; init; } = 16;

    /// <summary>max_write_zeroes_sectors: sectors one write-zeroes range may cover.</summary>
    public uint MaxWriteZeroesSectors { get; init; } = 1 << 22;

    /// <summary>max_write_zeroes_seg: ranges one write-zeroes request may carry (up to <see cref="VirtioBlk.MaxRangeSegments"/>).</summary>
    public uint MaxWriteZeroesSegments { get; init; } = 16;

    /// <summary>Start with a write-back cache (FLUSH makes writes durable) rather than write-through.</summary>
    public bool Writeback { get; init; } = true;

    /// <summary>
    /// Makes every write request take at least this long (plus up to as much again, by sector, so requests
    /// overlap and finish out of order): a disk slow to write, on demand, for tests and measurements. The
    /// requests then run on the I/O threads.
    /// </summary>
    public TimeSpan SimulatedLatency { get; init; }

    /// <summary>
    /// Front-ends one socket serves at once (VhostSocketOptions.MaxConnections). Two by default: the two ends of a
    /// live migration on one host (the source's and the destination's QEMU) connect at once and use the disk one
    /// after the other; a third is refused, as every connection shares this disk and its cache mode. Null: no limit.
    /// </summary>
    public int? MaxConnections { get; init; } = 2;

    /// <summary>Where the device's logger comes from; null: no logging.</summary>
    public ILoggerFactory? LoggerFactory { get; init; }
}

/// <summary>
/// A vhost-user virtio-blk device over an <see cref="IBlockStorage"/>: feature set, config space, and a
/// handler per queue that the runtime wakes on kicks (the counterpart of DPDK's examples/vhost_blk, as a library).
/// One instance serves every connection of a socket; devices come and go with the front-end.
/// </summary>
public sealed class VirtioBlk : VhostDeviceOps, IDeviceConfigSpace, IDisposable
{
    private readonly VirtioBlkOptions _options;
    private readonly ILogger _logger;
    private readonly BlkIoPool? _pool;
    private readonly bool _ownsPool;
    private readonly Lock _devicesLock = new();
    // a device's queue handlers live as long as the device (across ring restarts), so work begun before a restart completes after it
    private readonly Dictionary<VhostDevice, BlkQueue?[]> _devices = [];
    private readonly BlkQueueStats _retired = new();
    private readonly byte[] _id = new byte[BlkWire.IdBytes];
    private readonly Meter _meter;
    private volatile bool _writeback;

    /// <summary>A device over <paramref name="storage"/>, which the caller keeps and disposes; <paramref name="options"/> null takes the defaults.</summary>
    public VirtioBlk(IBlockStorage storage, VirtioBlkOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(storage);
        _options = options ?? new VirtioBlkOptions();
        if (_options.Queues is < 1 or > 256) throw new ArgumentOutOfRangeException(nameof(options), "Queues must be 1..256");
        // a request's ranges are copied onto the stack once: bounded so the copy stays small
        if (_options.MaxDiscardSegments is < 1 or > MaxRangeSegments || _options.MaxWriteZeroesSegments is < 1 or > MaxRangeSegments)
            throw new ArgumentOutOfRangeException(nameof(options), $"discard and write-zeroes segments must be 1..{MaxRangeSegments}");
        Storage = storage;
        _logger = (_options.LoggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Vhost.Blk");
        IsReadOnly = _options.ReadOnly || storage.IsReadOnly;
        _writeback = _options.Writeback;
        Encoding.ASCII.GetBytes(storage.Serial.AsSpan(0, Math.Min(storage.Serial.Length, BlkWire.IdBytes)), _id);
        if ((storage.IsSlow || _options.SimulatedLatency > TimeSpan.Zero) && _options.IoThreads > 0)
        {
            _pool = _options.IoPool ?? new BlkIoPool(_options.IoThreads);
            _ownsPool = _options.IoPool == null;
        }
        _meter = new Meter("Vhost.Blk");
        _meter.CreateObservableCounter("vhost.blk.requests", () => TotalStats().Requests, "{request}");
        _meter.CreateObservableCounter("vhost.blk.read_bytes", () => TotalStats().ReadBytes, "By");
        _meter.CreateObservableCounter("vhost.blk.written_bytes", () => TotalStats().WrittenBytes, "By");
        _meter.CreateObservableCounter("vhost.blk.errors", () => TotalStats().IoErrors + TotalStats().Invalid, "{request}");
    }

    /// <summary>The most discard or write-zeroes ranges one request may carry (max_discard_seg's upper bound here).</summary>
    public const int MaxRangeSegments = 256;

    /// <summary>The storage the device serves.</summary>
    public IBlockStorage Storage { get; }

    /// <summary>Whether the device refuses writes (the options or the storage said so); VIRTIO_BLK_F_RO is offered then.</summary>
    public bool IsReadOnly { get; }

    /// <summary>The most request queues a front-end may use.</summary>
    public int QueueCount => _options.Queues;

    /// <summary>The write cache mode (config writeback): the driver may switch it with VIRTIO_BLK_F_CONFIG_WCE.</summary>
    public bool WritebackCache => _writeback;

    internal ReadOnlySpan<byte> IdBytes => _id;
    internal int SimulatedLatencyMs => (int)_options.SimulatedLatency.TotalMilliseconds;
    internal uint MaxDiscardSectors => _options.MaxDiscardSectors;
    internal uint MaxDiscardSegments => _options.MaxDiscardSegments;
    internal uint MaxWriteZeroesSectors => _options.MaxWriteZeroesSectors;
    internal uint MaxWriteZeroesSegments => _options.MaxWriteZeroesSegments;

    /// <summary>The virtio features this device offers.</summary>
    public ulong Features
    {
        get
        {
            ulong f = VhostSocketOptions.DefaultFeatures;
            // no VIRTIO_BLK_F_GEOMETRY: qemu-storage-daemon offers none, and a guest that negotiated it cannot migrate
            // to a back-end that lacks it (QEMU's destination refuses the device's features)
            foreach (int bit in (ReadOnlySpan<int>)[BlkFeature.SizeMax, BlkFeature.SegMax, BlkFeature.BlkSize,
                         BlkFeature.Flush, BlkFeature.Topology, BlkFeature.ConfigWce, BlkFeature.Mq, BlkFeature.Discard, BlkFeature.WriteZeroes])
                f |= 1UL << bit;
            // no VIRTIO_F_IN_ORDER: requests finish in the order the storage finishes them
            if (IsReadOnly) f |= 1UL << BlkFeature.ReadOnly;
            return f;
        }
    }

    /// <summary>The protocol features: the core's plus config space access and in-flight tracking (so a
    /// restarted back-end resubmits what the previous one left unfinished).</summary>
    public ulong ProtocolFeatures =>
        VhostSocketOptions.DefaultProtocolFeatures | (1UL << (int)ProtocolFeature.Config) | (1UL << (int)ProtocolFeature.InflightShmfd);

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
        ConfigSpace = this,
        Ops = this,
        MaxConnections = _options.MaxConnections,
        LoggerFactory = loggerFactory ?? _options.LoggerFactory,
    };

    /// <summary>Counters over every queue of every device, past and present.</summary>
    public BlkQueueStats TotalStats()
    {
        var total = new BlkQueueStats();
        lock (_devicesLock)
        {
            total.Add(_retired);
            foreach (var (device, queues) in _devices)
                for (int i = 0; i < queues.Length; i++)
                    if (queues[i] is { } q)
                    {
                        q.Stats.NoteIotlb(device, i);
                        total.Add(q.Stats);
                    }
        }
        return total;
    }

    /// <summary>Requests running on the I/O threads right now, over every device.</summary>
    public int InFlight
    {
        get
        {
            lock (_devicesLock) return _devices.Values.Sum(qs => qs.Sum(q => q?.InFlight ?? 0));
        }
    }

    /// <summary>Counters of one queue of the connected devices.</summary>
    public BlkQueueStats QueueStats(int queue)
    {
        var total = new BlkQueueStats();
        lock (_devicesLock)
        {
            foreach (var (device, queues) in _devices)
                if (queue < queues.Length && queues[queue] is { } q)
                {
                    q.Stats.NoteIotlb(device, queue);
                    total.Add(q.Stats);
                }
        }
        return total;
    }

    internal BlkQueue[] Workers(VhostDevice device)
    {
        lock (_devicesLock) return _devices.TryGetValue(device, out var q) ? [.. q.Where(x => x != null).Select(x => x!)] : [];
    }

    /// <summary>Serves each queue the front-end configured, up to <see cref="QueueCount"/>, with a request handler on kicks.</summary>
    public override bool NewDevice(VhostDevice device)
    {
        int n = Math.Min(device.ConfiguredQueueCount, _options.Queues);
        BlkQueue?[]? queues;
        lock (_devicesLock)
        {
            if (!_devices.TryGetValue(device, out queues))
            {
                queues = new BlkQueue?[_options.Queues];
                _devices[device] = queues;
                device.Closed.Register(static state => { var (blk, dev) = ((VirtioBlk, VhostDevice))state!; blk.Forget(dev); }, (this, device));
            }
            for (int i = 0; i < n; i++) queues[i] ??= new BlkQueue(this, device.Queue(i), _pool, _logger);
        }
        for (int i = 0; i < n; i++) device.Serve(i, queues[i]!);
        _logger.LogInformation("blk device {Id}: serving {Queues} queue(s), {Capacity} bytes{Ro}, write {Mode}",
            device.Id, n, Storage.Capacity, IsReadOnly ? " read-only" : "", _writeback ? "back" : "through");
        return true;
    }

    /// <summary>The device is released (every request it began has completed): its counters join the retired ones.</summary>
    private void Forget(VhostDevice device)
    {
        lock (_devicesLock)
        {
            if (!_devices.Remove(device, out var queues)) return;
            for (int i = 0; i < queues.Length; i++)
                if (queues[i] is { } q)
                {
                    q.Stats.NoteIotlb(device, i);
                    _retired.Add(q.Stats);
                }
        }
    }

    bool IDeviceConfigSpace.Read(VhostDevice device, uint offset, Span<byte> destination)
    {
        Span<byte> cfg = stackalloc byte[BlkConfigLayout.Size];
        FillConfig(cfg);
        destination.Clear();
        if (offset < cfg.Length)
        {
            var part = cfg[(int)offset..];
            part[..Math.Min(part.Length, destination.Length)].CopyTo(destination);
        }
        return true;
    }

    bool IDeviceConfigSpace.Write(VhostDevice device, uint offset, ReadOnlySpan<byte> data, uint flags)
    {
        // the only field the driver may write is writeback, and only when CONFIG_WCE was negotiated
        if (offset != BlkConfigLayout.Writeback || data.Length != 1 || !device.HasFeature(BlkFeature.ConfigWce) || data[0] > 1)
        {
            _logger.LogWarning("blk device {Id}: SET_CONFIG offset {Offset} size {Size} refused", device.Id, offset, data.Length);
            return false;
        }
        _writeback = data[0] == 1;
        _logger.LogInformation("blk device {Id}: cache mode write-{Mode}", device.Id, _writeback ? "back" : "through");
        return true;
    }

    internal void FillConfig(Span<byte> c)
    {
        c.Clear();
        ulong sectors = (ulong)Storage.Capacity >> BlkWire.SectorShift;
        BinaryPrimitives.WriteUInt64LittleEndian(c[BlkConfigLayout.Capacity..], sectors);
        BinaryPrimitives.WriteUInt32LittleEndian(c[BlkConfigLayout.SizeMax..], _options.SizeMax);
        BinaryPrimitives.WriteUInt32LittleEndian(c[BlkConfigLayout.SegMax..], _options.SegMax);
        BinaryPrimitives.WriteUInt16LittleEndian(c[BlkConfigLayout.GeometryCylinders..], (ushort)Math.Min(65535UL, sectors / (16 * 63)));
        c[BlkConfigLayout.GeometryHeads] = 16;
        c[BlkConfigLayout.GeometrySectors] = 63;
        BinaryPrimitives.WriteUInt32LittleEndian(c[BlkConfigLayout.BlkSize..], BlkWire.SectorSize);
        c[BlkConfigLayout.PhysicalBlockExp] = 0;
        c[BlkConfigLayout.AlignmentOffset] = 0;
        BinaryPrimitives.WriteUInt16LittleEndian(c[BlkConfigLayout.MinIoSize..], 1);
        BinaryPrimitives.WriteUInt32LittleEndian(c[BlkConfigLayout.OptIoSize..], 0);
        c[BlkConfigLayout.Writeback] = _writeback ? (byte)1 : (byte)0;
        BinaryPrimitives.WriteUInt16LittleEndian(c[BlkConfigLayout.NumQueues..], (ushort)_options.Queues);
        BinaryPrimitives.WriteUInt32LittleEndian(c[BlkConfigLayout.MaxDiscardSectors..], _options.MaxDiscardSectors);
        BinaryPrimitives.WriteUInt32LittleEndian(c[BlkConfigLayout.MaxDiscardSeg..], _options.MaxDiscardSegments);
        BinaryPrimitives.WriteUInt32LittleEndian(c[BlkConfigLayout.DiscardSectorAlignment..], 8);
        BinaryPrimitives.WriteUInt32LittleEndian(c[BlkConfigLayout.MaxWriteZeroesSectors..], _options.MaxWriteZeroesSectors);
        BinaryPrimitives.WriteUInt32LittleEndian(c[BlkConfigLayout.MaxWriteZeroesSeg..], _options.MaxWriteZeroesSegments);
        c[BlkConfigLayout.WriteZeroesMayUnmap] = 1;
    }

    /// <summary>Stops the I/O threads; the sockets serving this device must be disposed first.</summary>
    public void Dispose()
    {
        if (_ownsPool) _pool?.Dispose();
        _meter.Dispose();
    }
}
