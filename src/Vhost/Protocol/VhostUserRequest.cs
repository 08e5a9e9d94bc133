namespace Vhost.Protocol;

/// <summary>Front-end to back-end request numbers (vhost-user spec, "Front-end message types").</summary>
internal enum VhostUserRequest : uint
{
    None = 0,
    GetFeatures = 1,
    SetFeatures = 2,
    SetOwner = 3,
    ResetOwner = 4,
    SetMemTable = 5,
    SetLogBase = 6,
    SetLogFd = 7,
    SetVringNum = 8,
    SetVringAddr = 9,
    SetVringBase = 10,
    GetVringBase = 11,
    SetVringKick = 12,
    SetVringCall = 13,
    SetVringErr = 14,
    GetProtocolFeatures = 15,
    SetProtocolFeatures = 16,
    GetQueueNum = 17,
    SetVringEnable = 18,
    SendRarp = 19,
    NetSetMtu = 20,
    SetBackendReqFd = 21,
    IotlbMsg = 22,
    SetVringEndian = 23,
    GetConfig = 24,
    SetConfig = 25,
    CreateCryptoSession = 26,
    CloseCryptoSession = 27,
    PostcopyAdvise = 28,
    PostcopyListen = 29,
    PostcopyEnd = 30,
    GetInflightFd = 31,
    SetInflightFd = 32,
    GpuSetSocket = 33,
    ResetDevice = 34,
    VringKick = 35,
    GetMaxMemSlots = 36,
    AddMemReg = 37,
    RemMemReg = 38,
    SetStatus = 39,
    GetStatus = 40,
    GetSharedObject = 41,
    SetDeviceStateFd = 42,
    CheckDeviceState = 43,
}

/// <summary>Back-end to front-end request numbers (sent on the backend channel).</summary>
internal enum VhostUserBackendRequest : uint
{
    IotlbMsg = 1,
    ConfigChangeMsg = 2,
    VringHostNotifierMsg = 3,
    VringCall = 4,
    VringErr = 5,
    SharedObjectAdd = 6,
    SharedObjectRemove = 7,
    SharedObjectLookup = 8,
}

/// <summary>VHOST_USER_PROTOCOL_F_* bit numbers.</summary>
public enum ProtocolFeature
{
    /// <summary>VHOST_USER_PROTOCOL_F_MQ: the front-end may ask for the number of queues (GET_QUEUE_NUM).</summary>
    Mq = 0,
    /// <summary>VHOST_USER_PROTOCOL_F_LOG_SHMFD: the dirty log of a live migration comes as shared memory.</summary>
    LogShmfd = 1,
    /// <summary>VHOST_USER_PROTOCOL_F_RARP: the back-end may be asked to announce a guest's MAC after migration.</summary>
    Rarp = 2,
    /// <summary>VHOST_USER_PROTOCOL_F_REPLY_ACK: a message with the need-reply flag gets a success or failure reply.</summary>
    ReplyAck = 3,
    /// <summary>VHOST_USER_PROTOCOL_F_NET_MTU: the front-end tells the back-end the MTU (SET_NET_MTU).</summary>
    NetMtu = 4,
    /// <summary>VHOST_USER_PROTOCOL_F_BACKEND_REQ: a second channel on which the back-end sends requests (IOTLB misses, config changes).</summary>
    BackendReq = 5,
    /// <summary>VHOST_USER_PROTOCOL_F_CROSS_ENDIAN: rings of a legacy device in the other byte order (not implemented).</summary>
    CrossEndian = 6,
    /// <summary>VHOST_USER_PROTOCOL_F_CRYPTO_SESSION: CREATE/CLOSE_CRYPTO_SESSION messages.</summary>
    CryptoSession = 7,
    /// <summary>VHOST_USER_PROTOCOL_F_PAGEFAULT: postcopy live migration with a userfaultfd.</summary>
    Pagefault = 8,
    /// <summary>VHOST_USER_PROTOCOL_F_CONFIG: the device's config space is read and written with GET/SET_CONFIG.</summary>
    Config = 9,
    /// <summary>VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD: back-end requests may carry file descriptors.</summary>
    BackendSendFd = 10,
    /// <summary>VHOST_USER_PROTOCOL_F_HOST_NOTIFIER: the back-end maps notification areas into the guest (not implemented).</summary>
    HostNotifier = 11,
    /// <summary>VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD: in-flight requests are tracked in shared memory so a restarted back-end can resubmit them.</summary>
    InflightShmfd = 12,
    /// <summary>VHOST_USER_PROTOCOL_F_RESET_DEVICE: RESET_DEVICE replaces RESET_OWNER.</summary>
    ResetDevice = 13,
    /// <summary>VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS: kicks and calls may travel as messages instead of eventfds.</summary>
    InbandNotifications = 14,
    /// <summary>VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS: memory regions are added and removed one at a time (ADD_MEM_REG, REM_MEM_REG).</summary>
    ConfigureMemSlots = 15,
    /// <summary>VHOST_USER_PROTOCOL_F_STATUS: the front-end sets and reads the virtio device status.</summary>
    Status = 16,
    /// <summary>VHOST_USER_PROTOCOL_F_XEN_MMAP: Xen grant mappings (not implemented).</summary>
    XenMmap = 17,
    /// <summary>VHOST_USER_PROTOCOL_F_SHARED_OBJECT: virtio shared objects (not implemented).</summary>
    SharedObject = 18,
    /// <summary>VHOST_USER_PROTOCOL_F_DEVICE_STATE: transfer of back-end state for migration (not implemented).</summary>
    DeviceState = 19,
}

/// <summary>Virtio and vhost feature bit numbers shared by every device type.</summary>
public static class VirtioFeature
{
    /// <summary>VIRTIO_F_NOTIFY_ON_EMPTY: interrupt when the available ring runs empty (legacy).</summary>
    public const int NotifyOnEmpty = 24;
    /// <summary>VIRTIO_F_ANY_LAYOUT: headers and data need not sit in separate descriptors (legacy).</summary>
    public const int AnyLayout = 27;
    /// <summary>VIRTIO_F_RING_INDIRECT_DESC: descriptors may point to tables of further descriptors.</summary>
    public const int RingIndirectDesc = 28;
    /// <summary>VIRTIO_F_RING_EVENT_IDX: kicks and interrupts are suppressed with event indexes.</summary>
    public const int RingEventIdx = 29;
    /// <summary>VHOST_USER_F_PROTOCOL_FEATURES.</summary>
    public const int ProtocolFeatures = 30;
    /// <summary>VIRTIO_F_VERSION_1: a modern (virtio 1.0 or later, little-endian) device.</summary>
    public const int Version1 = 32;
    /// <summary>VIRTIO_F_ACCESS_PLATFORM: ring and buffer addresses are IOVAs translated through a vIOMMU.</summary>
    public const int AccessPlatform = 33;
    /// <summary>VIRTIO_F_RING_PACKED: the packed ring layout instead of the split one.</summary>
    public const int RingPacked = 34;
    /// <summary>VIRTIO_F_IN_ORDER: buffers are used in the order they were made available.</summary>
    public const int InOrder = 35;
    /// <summary>VIRTIO_F_ORDER_PLATFORM: memory accesses are ordered as the platform's DMA requires.</summary>
    public const int OrderPlatform = 36;
    /// <summary>VHOST_F_LOG_ALL: dirty logging for live migration.</summary>
    public const int LogAll = 26;

    /// <summary>The feature mask with only bit <paramref name="bit"/> set.</summary>
    public static ulong Bit(int bit) => 1UL << bit;

    /// <summary>Whether <paramref name="features"/> has bit <paramref name="bit"/> set.</summary>
    public static bool Has(ulong features, int bit) => (features & (1UL << bit)) != 0;
}

/// <summary>The virtio device status bits (SET_STATUS).</summary>
[Flags]
public enum VirtioDeviceStatus : byte
{
    /// <summary>Nothing set: the device is reset.</summary>
    None = 0,
    /// <summary>The guest has noticed the device.</summary>
    Acknowledge = 1,
    /// <summary>The guest has a driver for the device.</summary>
    Driver = 2,
    /// <summary>The driver is set up and the device may run.</summary>
    DriverOk = 4,
    /// <summary>The driver has accepted the features it negotiated.</summary>
    FeaturesOk = 8,
    /// <summary>The device hit an error it cannot recover from without a reset.</summary>
    DeviceNeedsReset = 64,
    /// <summary>The driver gave up on the device.</summary>
    Failed = 128,
}
