namespace Vhost.Protocol;

/// <summary>Front-end to back-end request numbers (vhost-user spec, "Front-end message types").</summary>
public enum VhostUserRequest : uint
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
public enum VhostUserBackendRequest : uint
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
    Mq = 0,
    LogShmfd = 1,
    Rarp = 2,
    ReplyAck = 3,
    NetMtu = 4,
    BackendReq = 5,
    CrossEndian = 6,
    CryptoSession = 7,
    Pagefault = 8,
    Config = 9,
    BackendSendFd = 10,
    HostNotifier = 11,
    InflightShmfd = 12,
    ResetDevice = 13,
    InbandNotifications = 14,
    ConfigureMemSlots = 15,
    Status = 16,
    XenMmap = 17,
    SharedObject = 18,
    DeviceState = 19,
}

/// <summary>Virtio and vhost feature bit numbers shared by every device type.</summary>
public static class VirtioFeature
{
    public const int NotifyOnEmpty = 24;
    public const int AnyLayout = 27;
    public const int RingIndirectDesc = 28;
    public const int RingEventIdx = 29;
    /// <summary>VHOST_USER_F_PROTOCOL_FEATURES.</summary>
    public const int ProtocolFeatures = 30;
    public const int Version1 = 32;
    public const int AccessPlatform = 33;
    public const int RingPacked = 34;
    public const int InOrder = 35;
    public const int OrderPlatform = 36;
    /// <summary>VHOST_F_LOG_ALL: dirty logging for live migration.</summary>
    public const int LogAll = 26;

    public static ulong Bit(int bit) => 1UL << bit;

    public static bool Has(ulong features, int bit) => (features & (1UL << bit)) != 0;
}

/// <summary>The virtio device status bits (SET_STATUS).</summary>
[Flags]
public enum VirtioDeviceStatus : byte
{
    None = 0,
    Acknowledge = 1,
    Driver = 2,
    DriverOk = 4,
    FeaturesOk = 8,
    DeviceNeedsReset = 64,
    Failed = 128,
}
