using Vhost.Interop;
using Vhost.Protocol;
using Vhost.Rings;
using Vhost.Testing.FrontEnd;

namespace Vhost.Tests.Hostile;

/// <summary>
/// SET_INFLIGHT_FD descriptions a front-end can get wrong or forge. Each is refused with one error line
/// (a negative REPLY_ACK, or a closed connection when the framing is wrong), leaks no fd or mapping, and the
/// well-behaved device keeps moving chains.
/// </summary>
[Collection(HostileCollection.Name)]
public sealed class InflightTests
{
    private const ulong Inflight = 1UL << (int)ProtocolFeature.InflightShmfd;

    private static readonly ulong PerQueue = Virtqueue.InflightQueueRegionSize(64);

    private static Scene NewScene() => new(extraProtocolFeatures: Inflight);

    /// <summary>A hostile connection that negotiated INFLIGHT_SHMFD.</summary>
    private static (TestFrontEnd Fe, DeviceSetup Setup) Negotiated(Scene s, bool inflight = true)
    {
        var fe = s.Connect();
        var setup = new DeviceSetup(fe, new DeviceSetupOptions
        {
            QueueSize = 64,
            ProtocolFeatures = DeviceSetupOptions.DefaultProtocolFeatures | (inflight ? Inflight : 0),
        });
        setup.Negotiate();
        Assert.Equal(inflight, (setup.AckedProtocolFeatures & Inflight) != 0);
        return (fe, setup);
    }

    /// <summary>Sends SET_INFLIGHT_FD with a memfd of <paramref name="fdSize"/> bytes and expects a negative ack.</summary>
    private static void RefusedWith(InflightPayload info, long fdSize, string phrase, bool inflight = true)
    {
        using var s = NewScene();
        var (fe, setup) = Negotiated(s, inflight);
        using (fe)
        using (setup)
        using (var fd = FileDescriptors.CreateMemFd("vhost-test-inflight", fdSize))
        {
            Scene.AssertNack(fe.SetInflightFd(info, fd, needReply: true));
            Assert.False(s.WaitOtherDevice().HasInflightArea);
            s.AssertGoodDeviceWorks();
        }
        s.AssertOneError(phrase);
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void FdShorterThanTheAreaItDescribes() =>
        // fstat before mmap: mapping 2 queues' worth of a 4 KiB file would fault on first touch (SIGBUS)
        RefusedWith(new InflightPayload(2 * PerQueue, 0, 2, 64), 4096, $"the fd holds 4096 bytes, not {2 * PerQueue} at offset 0");

    [Fact]
    public void AreaTooSmallForItsQueues() =>
        RefusedWith(new InflightPayload(PerQueue, 0, 2, 64), 1 << 20, $"an area of {PerQueue} bytes for 2 queue(s) of 64, which need {2 * PerQueue}");

    [Fact]
    public void AreaOfAbsurdSize() =>
        RefusedWith(new InflightPayload(1UL << 40, 0, 1, 64), 1 << 20, "an area of 1099511627776 bytes");

    [Fact]
    public void OffsetBeyondFourGiB() =>
        RefusedWith(new InflightPayload(PerQueue, 1UL << 33, 1, 64), 1 << 20, "offset 8589934592 is beyond");

    [Fact]
    public void OffsetPushesTheAreaPastTheEndOfTheFd() =>
        RefusedWith(new InflightPayload(PerQueue, 1 << 20, 1, 64), 1 << 20, $"the fd holds 1048576 bytes, not {PerQueue} at offset 1048576");

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(65535)]
    public void QueueCountTheDeviceDoesNotHave(int queues) =>
        RefusedWith(new InflightPayload(PerQueue * (ulong)Math.Max(queues, 1), 0, (ushort)queues, 64), 1 << 20, $"{queues} queues, but this device has 2");

    [Theory]
    [InlineData(0)]
    [InlineData(40000)]
    public void QueueSizeOutOfRange(int size) =>
        RefusedWith(new InflightPayload(1 << 20, 0, 1, (ushort)size), 1 << 22, $"queue size {size}");

    [Fact]
    public void WithoutTheProtocolFeature() =>
        RefusedWith(new InflightPayload(PerQueue, 0, 1, 64), 1 << 20, "SET_INFLIGHT_FD without VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD", inflight: false);

    [Fact]
    public void PipeWhereAMemoryFileIsExpected()
    {
        using var s = NewScene();
        var (fe, setup) = Negotiated(s);
        using (fe)
        using (setup)
        {
            var (r, w) = FileDescriptors.Pipe();
            using (r)
            using (w)
                Scene.AssertNack(fe.SetInflightFd(new InflightPayload(PerQueue, 0, 1, 64), r, needReply: true));
            s.AssertGoodDeviceWorks();
        }
        s.AssertOneError("the fd is not a memory file");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void PayloadShorterThanTheStructCloses()
    {
        using var s = NewScene();
        var (fe, setup) = Negotiated(s);
        using (fe)
        using (setup)
        using (var fd = FileDescriptors.CreateMemFd("vhost-test-inflight", 1 << 20))
        {
            // the 20 bytes of the C struct without the 4 bytes of tail padding QEMU sends
            fe.SendWithFds(VhostUserRequest.SetInflightFd, VhostUserPayload.Inflight(new InflightPayload(PerQueue, 0, 1, 64)).AsSpan(0, 20), [fd]);
            Scene.AssertClosed(fe);
        }
        s.AssertOneError("SetInflightFd payload is 20 bytes, expected at least 24");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void NoFdCloses()
    {
        using var s = NewScene();
        var (fe, setup) = Negotiated(s);
        using (fe)
        using (setup)
        {
            fe.Send(VhostUserRequest.SetInflightFd, VhostUserPayload.Inflight(new InflightPayload(PerQueue, 0, 1, 64)));
            Scene.AssertClosed(fe);
        }
        s.AssertOneError("SetInflightFd carries 0 fds, expected 1");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void GetForMoreQueuesThanTheDeviceHas()
    {
        using var s = NewScene();
        var (fe, setup) = Negotiated(s);
        using (fe)
        using (setup)
        {
            fe.Send(VhostUserRequest.GetInflightFd, VhostUserPayload.Inflight(new InflightPayload(0, 0, 9, 64)), needReply: true);
            // a request with a reply gets no ack: the refusal closes the connection
            Scene.AssertClosed(fe);
        }
        s.AssertOneError("GET_INFLIGHT_FD for 9 queues of 64");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    /// <summary>The good path leaks nothing either: the area the back-end made and mapped goes with the connection.</summary>
    [Fact]
    public void AcceptedAreaIsReleasedWithTheConnection()
    {
        using var s = NewScene();
        var (fe, setup) = Negotiated(s);
        using (fe)
        using (setup)
        {
            var (info, fd) = fe.GetInflightFd(2, 64);
            Assert.NotNull(fd);
            using (fd)
            {
                Assert.Equal(2 * PerQueue, info.MmapSize);
                Assert.Equal(0UL, fe.SetInflightFd(info, fd!, needReply: true));
            }
            Assert.True(s.WaitOtherDevice().HasInflightArea);
            s.AssertGoodDeviceWorks();
        }
        Assert.Empty(s.Be.Logs.Errors);
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }
}
