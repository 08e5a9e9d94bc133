using Vhost.Device;
using Vhost.Protocol;
using Vhost.Testing.BackEnd;
using Vhost.Testing.FrontEnd;
using Vhost.Transport;

namespace Vhost.Tests.Device;

public sealed class FeatureNegotiationTests
{
    [Fact]
    public void DisabledBitsAreNotOfferedAndTheNegotiatedSetIsPerDevice()
    {
        var path = TestFrontEndListener.TempPath();
        var ops = new RecordingOps();
        using var socket = new VhostUserSocket(new VhostSocketOptions { Path = path, Ops = ops, MaxQueues = 2, QueueNumReply = 1 });
        socket.DisableFeatures(VirtioFeature.Bit(VirtioFeature.RingEventIdx) | VirtioFeature.Bit(VirtioFeature.RingPacked));
        socket.EnableFeatures(1UL << 5); // VIRTIO_NET_F_MAC, as an application would
        socket.SetProtocolFeatures(socket.ProtocolFeatures & ~(1UL << (int)ProtocolFeature.Status));
        socket.Start();
        Assert.Throws<InvalidOperationException>(() => socket.EnableFeatures(VirtioFeature.Bit(VirtioFeature.RingEventIdx)));

        using var fe = TestFrontEnd.Connect(path, TimeSpan.FromSeconds(5));
        ulong offered = fe.GetFeatures();
        Assert.Equal(socket.Features, offered);
        Assert.False(VirtioFeature.Has(offered, VirtioFeature.RingEventIdx));
        Assert.False(VirtioFeature.Has(offered, VirtioFeature.RingPacked));
        Assert.True(VirtioFeature.Has(offered, 5));
        Assert.Equal(0UL, fe.GetProtocolFeatures() & (1UL << (int)ProtocolFeature.Status));

        // the front-end picks a subset; the device reports exactly that subset
        using var setup = DeviceSetup.Run(fe, new DeviceSetupOptions { Features = offered & ~(1UL << 5) });
        ops.WaitFor("new");
        Assert.Equal(offered & ~(1UL << 5), ops.LastNew!.Features);
        Assert.Equal(setup.AckedProtocolFeatures, ops.LastNew.ProtocolFeatures);
        Assert.Equal(1UL, setup.ReportedQueueNum);
    }

    [Fact]
    public void BitsNeverOfferedAreRefused()
    {
        using var be = new TestBackEnd();
        using var fe = be.Connect();
        fe.GetFeatures();
        fe.SetProtocolFeatures(1UL << (int)ProtocolFeature.ReplyAck);
        fe.GetProtocolFeatures();
        Assert.NotEqual(0UL, fe.SetFeatures(VirtioFeature.Bit(VirtioFeature.AccessPlatform), needReply: true));
        Assert.True(be.Logs.WaitForError("never offered"));
        // the refusal did not cost the connection: a good request still works
        Assert.Equal(0UL, fe.SetFeatures(VirtioFeature.Bit(VirtioFeature.Version1), needReply: true));
    }

    [Fact]
    public void ProtocolBitsNeverOfferedCloseTheConnectionWithoutReplyAck()
    {
        using var be = new TestBackEnd();
        using var fe = be.Connect();
        fe.SetProtocolFeatures(1UL << (int)ProtocolFeature.CryptoSession);
        Assert.True(fe.IsClosedByPeer(TimeSpan.FromSeconds(5)));
        Assert.True(be.Logs.WaitForError("never offered"));
    }
}
