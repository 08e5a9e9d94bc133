using Vhost.Device;
using Vhost.Protocol;

namespace Vhost.Net;

/// <summary>virtio-net feature bits (virtio spec 5.1.3) and the socket options a net back-end offers.</summary>
public static class NetFeatures
{
    public const int Csum = 0;
    public const int GuestCsum = 1;
    public const int Mtu = 3;
    public const int Mac = 5;
    public const int GuestTso4 = 7;
    public const int GuestTso6 = 8;
    public const int GuestEcn = 9;
    public const int GuestUfo = 10;
    public const int HostTso4 = 11;
    public const int HostTso6 = 12;
    public const int HostEcn = 13;
    public const int HostUfo = 14;
    public const int MrgRxbuf = 15;
    public const int Status = 16;
    public const int CtrlVq = 17;
    public const int CtrlRx = 18;
    public const int GuestAnnounce = 21;
    public const int Mq = 22;

    /// <summary>What a net socket offers by default, as DPDK's builtin net device does. CTRL_VQ is offered
    /// because front-ends (QEMU, virtio-user) run the control queue themselves and virtio-user needs it for MQ.</summary>
    public static ulong Default =>
        VhostSocketOptions.DefaultFeatures | Bits(MrgRxbuf, Csum, GuestCsum, HostTso4, HostTso6, HostEcn, HostUfo,
            GuestTso4, GuestTso6, GuestEcn, GuestUfo, Mq, CtrlVq, Mtu, Status, GuestAnnounce, VirtioFeature.InOrder);

    public static ulong DefaultProtocol =>
        VhostSocketOptions.DefaultProtocolFeatures | (1UL << (int)ProtocolFeature.Rarp) | (1UL << (int)ProtocolFeature.NetMtu);

    public static ulong Bits(params ReadOnlySpan<int> bits)
    {
        ulong v = 0;
        foreach (int b in bits) v |= 1UL << b;
        return v;
    }

    /// <summary>Socket options for a net device with <paramref name="queuePairs"/> queue pairs.</summary>
    public static VhostSocketOptions Options(string path, int queuePairs = 1, VhostDeviceOps? ops = null, bool client = false,
        Microsoft.Extensions.Logging.ILoggerFactory? loggerFactory = null, Runtime.VhostRuntime? runtime = null) => new()
    {
        Runtime = runtime,
        Path = path,
        Client = client,
        MaxQueues = 2 * queuePairs,
        QueueNumReply = queuePairs,
        QueuesRequiredForReady = 2,
        Features = Default,
        ProtocolFeatures = DefaultProtocol,
        Ops = ops,
        LoggerFactory = loggerFactory,
    };
}
