using Vhost.Device;
using Vhost.Protocol;

namespace Vhost.Net;

/// <summary>virtio-net feature bits (virtio spec 5.1.3) and the socket options a net back-end offers.</summary>
public static class NetFeatures
{
    /// <summary>VIRTIO_NET_F_CSUM: the guest may send frames with a partial checksum for the device to finish.</summary>
    public const int Csum = 0;
    /// <summary>VIRTIO_NET_F_GUEST_CSUM: the guest accepts frames with a partial checksum.</summary>
    public const int GuestCsum = 1;
    /// <summary>VIRTIO_NET_F_MTU: the device reports a maximum MTU.</summary>
    public const int Mtu = 3;
    /// <summary>VIRTIO_NET_F_MAC: the device gives the guest its MAC address.</summary>
    public const int Mac = 5;
    /// <summary>VIRTIO_NET_F_GUEST_TSO4: the guest accepts TCPv4 segments larger than the MTU.</summary>
    public const int GuestTso4 = 7;
    /// <summary>VIRTIO_NET_F_GUEST_TSO6: the guest accepts TCPv6 segments larger than the MTU.</summary>
    public const int GuestTso6 = 8;
    /// <summary>VIRTIO_NET_F_GUEST_ECN: the guest accepts large TCP segments with ECN bits.</summary>
    public const int GuestEcn = 9;
    /// <summary>VIRTIO_NET_F_GUEST_UFO: the guest accepts UDP datagrams larger than the MTU.</summary>
    public const int GuestUfo = 10;
    /// <summary>VIRTIO_NET_F_HOST_TSO4: the guest may send TCPv4 segments for the device to split.</summary>
    public const int HostTso4 = 11;
    /// <summary>VIRTIO_NET_F_HOST_TSO6: the guest may send TCPv6 segments for the device to split.</summary>
    public const int HostTso6 = 12;
    /// <summary>VIRTIO_NET_F_HOST_ECN: the guest may send large TCP segments with ECN bits.</summary>
    public const int HostEcn = 13;
    /// <summary>VIRTIO_NET_F_HOST_UFO: the guest may send UDP datagrams for the device to fragment.</summary>
    public const int HostUfo = 14;
    /// <summary>VIRTIO_NET_F_MRG_RXBUF: a received frame may span several receive buffers (num_buffers in the header).</summary>
    public const int MrgRxbuf = 15;
    /// <summary>VIRTIO_NET_F_STATUS: the config space has a link status field.</summary>
    public const int Status = 16;
    /// <summary>VIRTIO_NET_F_CTRL_VQ: the device has a control queue (the front-end serves it).</summary>
    public const int CtrlVq = 17;
    /// <summary>VIRTIO_NET_F_CTRL_RX: receive filtering (promiscuous, all-multicast) through the control queue.</summary>
    public const int CtrlRx = 18;
    /// <summary>VIRTIO_NET_F_GUEST_ANNOUNCE: the guest can announce itself after a migration.</summary>
    public const int GuestAnnounce = 21;
    /// <summary>VIRTIO_NET_F_MQ: more than one queue pair.</summary>
    public const int Mq = 22;

    /// <summary>What a net socket offers by default, as DPDK's builtin net device does. CTRL_VQ is offered
    /// because front-ends (QEMU, virtio-user) run the control queue themselves and virtio-user needs it for MQ.</summary>
    public static ulong Default =>
        VhostSocketOptions.DefaultFeatures | Bits(MrgRxbuf, Csum, GuestCsum, HostTso4, HostTso6, HostEcn, HostUfo,
            GuestTso4, GuestTso6, GuestEcn, GuestUfo, Mq, CtrlVq, Mtu, Status, GuestAnnounce, VirtioFeature.InOrder);

    /// <summary>The protocol features a net socket offers by default: the core's, plus RARP and NET_MTU.</summary>
    public static ulong DefaultProtocol =>
        VhostSocketOptions.DefaultProtocolFeatures | (1UL << (int)ProtocolFeature.Rarp) | (1UL << (int)ProtocolFeature.NetMtu);

    /// <summary>The feature mask with each of <paramref name="bits"/> set.</summary>
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
