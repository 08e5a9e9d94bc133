using Vhost.Protocol;
using Vhost.Rings;
using Vhost.Testing.FrontEnd;

namespace Vhost.Tests.Hostile;

[Collection(HostileCollection.Name)]
public sealed class VringTests
{
    /// <summary>Negotiates and sends a good memory table on a hostile connection, then runs <paramref name="act"/>.</summary>
    private static void Case(string phrase, bool packed, Action<Scene, TestFrontEnd, DeviceSetup> act)
    {
        using var s = new Scene();
        using (var fe = s.Connect())
        using (var setup = new DeviceSetup(fe, new DeviceSetupOptions { Packed = packed, QueueSize = 64 }))
        {
            setup.Negotiate();
            setup.SendMemTable();
            act(s, fe, setup);
        }
        s.AssertOneError(phrase);
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void InbandKickWithoutInbandNotifications() =>
        Case("without VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS", false, (_, fe, setup) =>
        {
            setup.SetUpQueue(0);
            Scene.AssertNack(fe.VringKick(0, needReply: true));
        });

    [Fact]
    public void SizeZero() => Case("ring size 0", false, (_, fe, _) => Scene.AssertNack(fe.SetVringNum(0, 0, needReply: true)));

    [Fact]
    public void SplitSizeNotAPowerOfTwo() =>
        Case("split ring size 100 is not a power of two", false, (_, fe, _) => Scene.AssertNack(fe.SetVringNum(0, 100, needReply: true)));

    [Fact]
    public void PackedSizeNotAPowerOfTwoIsLegal() =>
        Case("ring size 65536 above 32768", true, (_, fe, _) =>
        {
            Assert.Equal(0UL, fe.SetVringNum(0, 100, needReply: true));
            Scene.AssertNack(fe.SetVringNum(0, 65536, needReply: true));
        });

    [Fact]
    public void SizeAbove32768() =>
        Case("ring size 65536 above 32768", false, (_, fe, _) => Scene.AssertNack(fe.SetVringNum(0, 65536, needReply: true)));

    /// <summary>A pipe or a socket as a kick, call or err fd could stall the reactor (a full pipe blocks a write): only eventfds.</summary>
    [Theory]
    [InlineData((uint)VhostUserRequest.SetVringKick)]
    [InlineData((uint)VhostUserRequest.SetVringCall)]
    [InlineData((uint)VhostUserRequest.SetVringErr)]
    public void VringFdThatIsNotAnEventFd(uint request) =>
        Case("the fd is not an eventfd", false, (_, fe, _) =>
        {
            var (r, w) = Vhost.Interop.FileDescriptors.Pipe();
            using (r)
            using (w)
            {
                Scene.AssertNack((VhostUserRequest)request switch
                {
                    VhostUserRequest.SetVringKick => fe.SetVringKick(0, r, needReply: true),
                    VhostUserRequest.SetVringCall => fe.SetVringCall(0, w, needReply: true),
                    _ => fe.SetVringErr(0, w, needReply: true),
                });
            }
        });

    /// <summary>Sends everything for queue 0 with <paramref name="address"/>; the kick (which starts the ring) must be refused.</summary>
    private static void StartWith(TestFrontEnd fe, QueueSetup q, VringAddress address)
    {
        Assert.Equal(0UL, fe.SetVringNum(0, q.Size, needReply: true));
        Assert.Equal(0UL, fe.SetVringAddr(address, needReply: true));
        Assert.Equal(0UL, fe.SetVringBase(0, q.Packed ? 0x8000u : 0, needReply: true));
        Assert.Equal(0UL, fe.SetVringCall(0, q.CallFd, needReply: true));
        Scene.AssertNack(fe.SetVringKick(0, q.KickFd, needReply: true));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void RingAddressesOutsideMemory(bool packed) =>
        Case("is not inside guest memory", packed, (s, fe, setup) =>
        {
            using var q = setup.AllocateQueue(0);
            StartWith(fe, q, q.Address with { DescUserAddr = 0xdead_0000 });
            Assert.False(s.WaitOtherDevice().Queue(0).Started);
        });

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void RingStraddlingTheEndOfARegion(bool packed) =>
        Case("is not inside guest memory", packed, (s, fe, setup) =>
        {
            using var q = setup.AllocateQueue(0);
            var r = setup.Memory.Regions[0];
            // the used ring (packed: device event area) starts 2 bytes before the region's end
            StartWith(fe, q, q.Address with { UsedUserAddr = r.UserAddr + r.Size - 2 });
            Assert.False(s.WaitOtherDevice().Queue(0).Started);
        });

    [Fact]
    public void PackedBaseBeyondTheRing() =>
        Case("packed ring base 100 beyond ring size 64", true, (_, fe, _) =>
        {
            Assert.Equal(0UL, fe.SetVringNum(0, 64, needReply: true));
            Scene.AssertNack(fe.SetVringBase(0, 100 | 0x8000, needReply: true));
        });

    [Fact]
    public void PackedBaseBeyondTheRingSentBeforeTheSize() =>
        Case("packed ring base 100 beyond ring size 64", true, (s, fe, setup) =>
        {
            // regression: the base was checked only against a size already set, so the ring started with its
            // position outside the descriptor ring and the first Pop threw out of the application's data path
            using var q = setup.AllocateQueue(0);
            Assert.Equal(0UL, fe.SetVringBase(0, 100 | 0x8000, needReply: true));
            Assert.Equal(0UL, fe.SetVringNum(0, 64, needReply: true));
            Assert.Equal(0UL, fe.SetVringAddr(q.Address, needReply: true));
            Assert.Equal(0UL, fe.SetVringCall(0, q.CallFd, needReply: true));
            Scene.AssertNack(fe.SetVringKick(0, q.KickFd, needReply: true));
            var queue = s.WaitOtherDevice().Queue(0);
            Assert.False(queue.Started);
            using (queue.AccessLock.EnterScope()) Assert.Equal(0, queue.Pop(new DescriptorChain[4], new BufferSegment[4]));
        });

    [Fact]
    public void SplitSizeLeftOverFromAPackedNegotiation() =>
        Case("split ring size 100 is not a power of two", true, (s, fe, setup) =>
        {
            // regression: a size legal for packed rings stayed when SET_FEATURES switched to split, and the ring
            // started with a mask that is not one
            Assert.Equal(0UL, fe.SetVringNum(0, 100, needReply: true));
            Assert.Equal(0UL, fe.SetFeatures(setup.AckedFeatures & ~VirtioFeature.Bit(VirtioFeature.RingPacked), needReply: true));
            using var q = setup.AllocateQueue(0);
            Assert.Equal(0UL, fe.SetVringAddr(q.Address, needReply: true));
            Assert.Equal(0UL, fe.SetVringBase(0, 0, needReply: true));
            Assert.Equal(0UL, fe.SetVringCall(0, q.CallFd, needReply: true));
            Scene.AssertNack(fe.SetVringKick(0, q.KickFd, needReply: true));
            Assert.False(s.WaitOtherDevice().Queue(0).Started);
        });

    [Theory]
    [InlineData((uint)VhostUserRequest.SetVringNum)]
    [InlineData((uint)VhostUserRequest.SetVringBase)]
    [InlineData((uint)VhostUserRequest.GetVringBase)]
    [InlineData((uint)VhostUserRequest.SetVringEnable)]
    public void QueueIndexThatDoesNotExist(uint request) =>
        Case("queue index 7 out of range (this device has 2)", false, (_, fe, _) =>
        {
            fe.Send((VhostUserRequest)request, VhostUserPayload.VringState(7, 1));
            Scene.AssertClosed(fe);
        });

    [Fact]
    public void VringAddrForAQueueThatDoesNotExist() =>
        Case("queue index 200 out of range", false, (_, fe, setup) =>
        {
            using var q = setup.AllocateQueue(0);
            fe.Send(VhostUserRequest.SetVringAddr, VhostUserPayload.VringAddress(q.Address with { Index = 200 }));
            Scene.AssertClosed(fe);
        });

    [Fact]
    public void VringKickForAQueueThatDoesNotExist() =>
        Case("queue index 9 out of range", false, (_, fe, _) =>
        {
            fe.Send(VhostUserRequest.SetVringKick, VhostUserPayload.VringFile(9, noFd: true));
            Scene.AssertClosed(fe);
        });
}
