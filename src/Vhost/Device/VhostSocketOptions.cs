using Microsoft.Extensions.Logging;
using Vhost.Memory;
using Vhost.Protocol;

namespace Vhost.Device;

/// <summary>What one registered socket serves: the counterpart of rte_vhost_driver_register's flags and
/// the rte_vhost_driver_set_* calls.</summary>
public sealed class VhostSocketOptions
{
    /// <summary>The virtio features offered when nothing else is said: the ring features every device type
    /// can use. Device libraries add their own bits; VIRTIO_F_IN_ORDER only a device type that completes in order
    /// (net does, blk does not). VHOST_F_LOG_ALL (live migration): the rings' writes are logged by the library,
    /// and a device that writes payload logs it through the lease (PushUsed with segments, LogWritten, LogWrite).</summary>
    public const ulong DefaultFeatures =
        (1UL << VirtioFeature.Version1) | (1UL << VirtioFeature.RingIndirectDesc) |
        (1UL << VirtioFeature.RingEventIdx) | (1UL << VirtioFeature.NotifyOnEmpty) |
        (1UL << VirtioFeature.RingPacked) | (1UL << VirtioFeature.ProtocolFeatures) | (1UL << VirtioFeature.LogAll);

    /// <summary>The protocol features the core implements.</summary>
    public const ulong DefaultProtocolFeatures =
        (1UL << (int)ProtocolFeature.Mq) | (1UL << (int)ProtocolFeature.ReplyAck) |
        (1UL << (int)ProtocolFeature.BackendReq) | (1UL << (int)ProtocolFeature.BackendSendFd) |
        (1UL << (int)ProtocolFeature.ResetDevice) | (1UL << (int)ProtocolFeature.ConfigureMemSlots) |
        (1UL << (int)ProtocolFeature.Status) | (1UL << (int)ProtocolFeature.InbandNotifications) |
        (1UL << (int)ProtocolFeature.LogShmfd) | (1UL << (int)ProtocolFeature.Pagefault);

    /// <summary>The Unix socket's path: created and listened on in server mode, connected to in client mode.</summary>
    public required string Path { get; init; }

    /// <summary>Connect to the front-end (RTE_VHOST_USER_CLIENT) instead of listening.</summary>
    public bool Client { get; init; }

    /// <summary>Client mode: reconnect every second after the front-end goes away (RTE_VHOST_USER_NO_RECONNECT off).</summary>
    public bool Reconnect { get; init; } = true;

    /// <summary>Client mode: how long to wait between connection attempts.</summary>
    public TimeSpan ReconnectInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>The virtio feature bits offered to the front-end (GET_FEATURES); a device type sets its own.</summary>
    public ulong Features { get; set; } = DefaultFeatures;

    /// <summary>The vhost-user protocol feature bits offered (GET_PROTOCOL_FEATURES), a mask of <see cref="ProtocolFeature"/> bits.</summary>
    public ulong ProtocolFeatures { get; set; } = DefaultProtocolFeatures;

    /// <summary>Virtqueues a device may have.</summary>
    public int MaxQueues { get; init; } = 2;

    /// <summary>What GET_QUEUE_NUM answers (queue pairs for net, queues for blk); default MaxQueues.</summary>
    public int? QueueNumReply { get; init; }

    /// <summary>Queues that must be ready before new_device (2 for net as in DPDK); null: every queue the
    /// front-end configured, at least one.</summary>
    public int? QueuesRequiredForReady { get; init; }

    /// <summary>What GET_MAX_MEM_SLOTS answers and the most regions a device maps.</summary>
    public int MaxMemorySlots { get; init; } = 32;

    /// <summary>Server mode: front-ends served at once; one more is refused (logged, closed). Null: no limit.</summary>
    public int? MaxConnections { get; init; }

    /// <summary>
    /// Offer VIRTIO_F_ACCESS_PLATFORM: serve a guest behind a vIOMMU, whose descriptors and rings hold IOVAs
    /// translated through IOTLB messages (DPDK's RTE_VHOST_USER_IOMMU_SUPPORT). Needs BACKEND_REQ and REPLY_ACK,
    /// which are offered by default. A front-end that does not negotiate it is served as without it.
    /// </summary>
    public bool Iommu
    {
        get => VirtioFeature.Has(Features, VirtioFeature.AccessPlatform);
        set => Features = value ? Features | (1UL << VirtioFeature.AccessPlatform) : Features & ~(1UL << VirtioFeature.AccessPlatform);
    }

    /// <summary>Entries the IOTLB of one device holds; when full, the oldest goes.</summary>
    public int IotlbCapacity { get; init; } = IoTlb.DefaultCapacity;

    /// <summary>How long a chain waits for the IOTLB update its miss asked for before it is returned to the guest unused (and counted as a bad chain).</summary>
    public TimeSpan IotlbMissTimeout { get; init; } = TimeSpan.FromMilliseconds(IoTlb.DefaultMissGiveUpMilliseconds);

    /// <summary>The application's callbacks for each device's life (rte_vhost_device_ops); null: none.</summary>
    public VhostDeviceOps? Ops { get; init; }

    /// <summary>The device's config space for GET_CONFIG and SET_CONFIG; null refuses both.</summary>
    public IDeviceConfigSpace? ConfigSpace { get; init; }

    /// <summary>CREATE_CRYPTO_SESSION / CLOSE_CRYPTO_SESSION (VHOST_USER_PROTOCOL_F_CRYPTO_SESSION): the device type that
    /// owns sessions; null refuses both.</summary>
    public ICryptoSessionHandler? CryptoSessions { get; init; }

    /// <summary>Front-end misbehaviour the rings tolerate (a device type's choice; none by default).</summary>
    public Rings.RingQuirks RingQuirks { get; init; }

    /// <summary>Where the socket's and its devices' loggers come from; null: no logging.</summary>
    public ILoggerFactory? LoggerFactory { get; init; }

    /// <summary>The event threads that serve this socket's devices; null: <see cref="Runtime.VhostRuntime.Shared"/>.</summary>
    public Runtime.VhostRuntime? Runtime { get; init; }
}
