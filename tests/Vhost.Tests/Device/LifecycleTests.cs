using Vhost.Device;
using Vhost.Protocol;
using Vhost.Rings;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;
using Vhost.Testing.BackEnd;

namespace Vhost.Tests.Device;

public sealed class LifecycleTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(5);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void NewDeviceFiresWithNegotiatedFeaturesAndRingsMoveData(bool packed)
    {
        using var be = new TestBackEnd();
        using var fe = be.Connect();
        using var setup = DeviceSetup.Run(fe, new DeviceSetupOptions { Packed = packed, QueueSize = 64 });
        be.Ops.WaitFor("new");
        var dev = be.Ops.LastNew!;
        Assert.Equal(setup.AckedFeatures, dev.Features);
        Assert.Equal(packed, dev.HasFeature(VirtioFeature.RingPacked));
        Assert.True(dev.IsRunning);

        // the driver offers a readable and a writable buffer; a back-end consumer reads one and fills the other
        var ring = DriverRing.Create(setup[0], setup.Memory);
        ulong inBuf = setup.Memory.Allocate(100), outBuf = setup.Memory.Allocate(50);
        setup.Memory.Span(inBuf, 100).Fill(0xab);
        ushort id = ring.Add(new DriverBuffer(inBuf, 100, false), new DriverBuffer(outBuf, 50, true));

        var q = dev.Queue(0);
        Span<DescriptorChain> chains = stackalloc DescriptorChain[4];
        var segs = new BufferSegment[16];
        int n;
        using (q.AccessLock.EnterScope()) n = q.Pop(chains, segs);
        Assert.Equal(1, n);
        Assert.Equal(id, chains[0].Id);
        Assert.Equal(100u, chains[0].ReadableBytes);
        Assert.Equal(50u, chains[0].WritableBytes);
        Assert.All(segs[0].Window.AsSpan().ToArray(), b => Assert.Equal(0xab, b));
        segs[chains[0].ReadableSegments].Window.AsSpan().Fill(0x5a);
        using (q.AccessLock.EnterScope())
        {
            q.PushUsed(chains[0], 50);
            q.FlushUsed();
        }
        var used = ring.WaitUsed(T);
        Assert.Equal(new UsedElement(id, 50), used);
        Assert.All(setup.Memory.Span(outBuf, 50).ToArray(), b => Assert.Equal(0x5a, b));
        Assert.True(setup[0].WaitCall(T), "the guest was not interrupted");
        Assert.True(be.Ops.Notified > 0);
    }

    [Fact]
    public void GetVringBaseStopsTheDeviceAndReportsTheIndex()
    {
        using var be = new TestBackEnd();
        using var fe = be.Connect();
        using var setup = DeviceSetup.Run(fe, new DeviceSetupOptions { QueueSize = 64 });
        be.Ops.WaitFor("new");
        var dev = be.Ops.LastNew!;
        var ring = (DriverSplitRing)DriverRing.Create(setup[1], setup.Memory);
        ulong buf = setup.Memory.Allocate(64);
        for (int i = 0; i < 3; i++) ring.Add(new DriverBuffer(buf, 64, false));
        var q = dev.Queue(1);
        using (q.AccessLock.EnterScope()) Assert.Equal(3, q.Pop(new DescriptorChain[8], new BufferSegment[8]));

        uint b = setup.StopQueue(1);
        Assert.Equal(3u, b);
        be.Ops.WaitFor($"destroy {dev.Id}");
        Assert.False(dev.IsRunning);
    }

    [Fact]
    public void DisconnectDestroysTheDeviceAndReleasesIt()
    {
        using var be = new TestBackEnd();
        using var gone = new ManualResetEventSlim();
        // raised once the device is both released and off the socket's list (destroy comes before either)
        be.Socket.Disconnected += _ => gone.Set();
        int id;
        using (var fe = be.Connect())
        {
            using var setup = DeviceSetup.Run(fe);
            be.Ops.WaitFor("new");
            id = be.Ops.LastNew!.Id;
            Assert.NotNull(VhostDevice.Find(id));
        }
        be.Ops.WaitFor($"destroy {id}");
        Assert.True(gone.Wait(T), "the connection never ended");
        Assert.Null(VhostDevice.Find(id));
        Assert.Empty(be.Socket.Devices);
    }

    [Fact]
    public void VringStateChangedOnEverySetVringEnable()
    {
        using var be = new TestBackEnd();
        using var fe = be.Connect();
        using var setup = DeviceSetup.Run(fe);
        be.Ops.WaitFor("new");
        int id = be.Ops.LastNew!.Id;
        Assert.True(be.Ops.Saw($"vring {id} 0 1"));
        Assert.True(be.Ops.Saw($"vring {id} 1 1"));
        fe.SetVringEnable(1, false, needReply: true);
        be.Ops.WaitFor($"vring {id} 1 0");
        fe.SetVringEnable(1, true, needReply: true);
        be.Ops.WaitFor($"vring {id} 1 1");
    }

    [Fact]
    public void FeaturesChangedWhenLogAllToggles()
    {
        using var be = new TestBackEnd(extraFeatures: VirtioFeature.Bit(VirtioFeature.LogAll));
        using var fe = be.Connect();
        using var setup = DeviceSetup.Run(fe);
        be.Ops.WaitFor("new");
        var dev = be.Ops.LastNew!;
        ulong withLog = setup.AckedFeatures | VirtioFeature.Bit(VirtioFeature.LogAll);
        Assert.Equal(0UL, fe.SetFeatures(withLog, needReply: true));
        Assert.Equal($"features {dev.Id} 0x{withLog:x}", be.Ops.WaitFor("features"));
        Assert.Equal(0UL, fe.SetFeatures(setup.AckedFeatures, needReply: true));
        Assert.Equal($"features {dev.Id} 0x{setup.AckedFeatures:x}", be.Ops.WaitFor("features"));
        // any other change while running is refused, as DPDK does
        Assert.NotEqual(0UL, fe.SetFeatures(setup.AckedFeatures & ~VirtioFeature.Bit(VirtioFeature.RingEventIdx), needReply: true));
        Assert.True(dev.IsRunning);
    }

    [Fact]
    public void GuestNotifyTakesInterruptsOverUntilTheApplicationNotifies()
    {
        using var be = new TestBackEnd();
        int hooked = 0;
        be.Ops.NotifyHook = (_, _) => { Interlocked.Increment(ref hooked); return true; };
        using var fe = be.Connect();
        using var setup = DeviceSetup.Run(fe, new DeviceSetupOptions { QueueSize = 64 });
        be.Ops.WaitFor("new");
        var dev = be.Ops.LastNew!;
        var ring = DriverRing.Create(setup[0], setup.Memory);
        ring.Add(new DriverBuffer(setup.Memory.Allocate(16), 16, true));
        var q = dev.Queue(0);
        var chains = new DescriptorChain[2];
        using (q.AccessLock.EnterScope())
        {
            Assert.Equal(1, q.Pop(chains, new BufferSegment[4]));
            q.PushUsed(chains[0], 0);
            q.FlushUsed();
        }
        Assert.Equal(1, hooked);
        Assert.False(setup[0].WaitCall(TimeSpan.FromMilliseconds(200)), "the library wrote the eventfd although the application took over");
        Assert.Equal(0, be.Ops.Notified);
        Assert.True(dev.NotifyGuest(0));
        Assert.True(setup[0].WaitCall(T));
        Assert.Equal(1, be.Ops.Notified);
    }

    [Fact]
    public void NewDeviceWaitsForDriverOkWhenStatusIsUsed()
    {
        using var be = new TestBackEnd();
        using var fe = be.Connect();
        using var setup = new DeviceSetup(fe, new DeviceSetupOptions { EnableQueues = true });
        setup.Negotiate();
        fe.SetStatus(VirtioDeviceStatus.Acknowledge | VirtioDeviceStatus.Driver | VirtioDeviceStatus.FeaturesOk, needReply: true);
        setup.SendMemTable();
        setup.SetUpQueue(0);
        setup.SetUpQueue(1);
        setup.EnableQueues();
        Assert.False(be.Ops.Saw("new"));
        fe.SetStatus(VirtioDeviceStatus.Acknowledge | VirtioDeviceStatus.Driver | VirtioDeviceStatus.FeaturesOk | VirtioDeviceStatus.DriverOk, needReply: true);
        be.Ops.WaitFor("new");
        Assert.Equal(VirtioDeviceStatus.DriverOk, fe.GetStatus() & VirtioDeviceStatus.DriverOk);
    }

    [Fact]
    public void ResetDeviceDestroysAndTheDeviceCanComeBack()
    {
        using var be = new TestBackEnd();
        using var fe = be.Connect();
        var setup = DeviceSetup.Run(fe);
        be.Ops.WaitFor("new");
        int id = be.Ops.LastNew!.Id;
        Assert.Equal(0UL, fe.ResetDevice(needReply: true));
        be.Ops.WaitFor($"destroy {id}");
        setup.Dispose();
        using var again = DeviceSetup.Run(fe);
        Assert.Equal($"new {id}", be.Ops.WaitFor("new"));
    }

    [Fact]
    public void InbandKickSignalsTheQueueWhenNegotiated()
    {
        using var be = new TestBackEnd();
        using var fe = be.Connect();
        using var setup = DeviceSetup.Run(fe, new DeviceSetupOptions
        {
            PollingKick = true,
            ProtocolFeatures = DeviceSetupOptions.DefaultProtocolFeatures | DeviceSetupOptions.ProtocolBits(ProtocolFeature.InbandNotifications),
        });
        be.Ops.WaitFor("new");
        var kick = be.Ops.LastNew!.Queue(0).KickFd!;
        Assert.Equal(0UL, fe.VringKick(0, needReply: true));
        Assert.Equal(1UL, Vhost.Interop.EventFd.TryConsume(kick));
    }

    [Fact]
    public void SetStatusZeroResetsARunningDeviceAndItCanComeBack()
    {
        using var be = new TestBackEnd();
        using var fe = be.Connect();
        var options = new DeviceSetupOptions { SendStatus = true };
        var setup = DeviceSetup.Run(fe, options);
        be.Ops.WaitFor("new");
        var dev = be.Ops.LastNew!;
        Assert.Equal(0UL, fe.SetStatus(VirtioDeviceStatus.None, needReply: true));
        be.Ops.WaitFor($"destroy {dev.Id}", T);
        Assert.False(dev.IsRunning);
        Assert.Equal(VirtioDeviceStatus.None, fe.GetStatus());
        // nothing made the device ready again while it waits for a new set-up
        Assert.Equal(0UL, fe.SetVringEnable(0, true, needReply: true));
        Assert.False(dev.IsRunning);
        setup.Dispose();
        using var again = DeviceSetup.Run(fe, options);
        Assert.Equal($"new {dev.Id}", be.Ops.WaitFor("new", T));
    }

    [Fact]
    public void SetStatusZeroBeforeGetVringBaseKeepsTheRingPositions()
    {
        // QEMU 7.2 stops a device with SET_STATUS 0 and only then asks for the ring positions (GET_VRING_BASE),
        // which the destination of a migration resumes from
        using var be = new TestBackEnd();
        using var fe = be.Connect();
        using var setup = DeviceSetup.Run(fe, new DeviceSetupOptions { SendStatus = true, QueueSize = 64 });
        be.Ops.WaitFor("new");
        var dev = be.Ops.LastNew!;
        var ring = DriverRing.Create(setup[0], setup.Memory);
        for (int i = 0; i < 3; i++) ring.Add(new DriverBuffer(setup.Memory.Allocate(16), 16, true));
        var q = dev.Queue(0);
        var chains = new DescriptorChain[4];
        using (q.AccessLock.EnterScope())
        {
            Assert.Equal(3, q.Pop(chains, new BufferSegment[8]));
            for (int i = 0; i < 3; i++) q.PushUsed(chains[i], 0);
            q.FlushUsed();
        }
        Assert.Equal(0UL, fe.SetStatus(VirtioDeviceStatus.None, needReply: true));
        be.Ops.WaitFor($"destroy {dev.Id}", T);
        Assert.Equal(3u, fe.GetVringBase(0));
    }

    [Fact]
    public void ClientModeConnectsAndReconnectsAfterTheFrontEndGoes()
    {
        using var listener = TestFrontEndListener.Listen(TestFrontEndListener.TempPath());
        using var be = new TestBackEnd(client: true, path: listener.Path);
        using (var fe = listener.Accept(T))
        {
            using var setup = DeviceSetup.Run(fe);
            be.Ops.WaitFor("new");
        }
        be.Ops.WaitFor("destroy");
        using var fe2 = listener.Accept(T);
        using var setup2 = DeviceSetup.Run(fe2);
        be.Ops.WaitFor("new");
    }

    [Fact]
    public void MemoryRegionsCanBeAddedAndRemoved()
    {
        using var be = new TestBackEnd();
        using var fe = be.Connect();
        using var setup = DeviceSetup.Run(fe);
        be.Ops.WaitFor("new");
        var dev = be.Ops.LastNew!;
        Assert.Equal(32UL, setup.ReportedMaxMemSlots);
        var extra = setup.Memory.AddRegion(0x1000_0000, 1 << 20);
        Assert.Equal(0UL, fe.AddMemReg(extra, needReply: true));
        Assert.Equal(2, dev.Memory.Count);
        Assert.True(dev.Memory.TryTranslate(0x1000_0000 + 100, 8, out _));
        Assert.True(dev.IsRunning);
        Assert.Equal(0UL, fe.RemMemReg(extra.Info, needReply: true));
        Assert.Equal(1, dev.Memory.Count);
        Assert.False(dev.Memory.TryTranslate(0x1000_0000 + 100, 8, out _));
        // the rings live in the first region: removing it is refused and the device keeps running
        Assert.NotEqual(0UL, fe.RemMemReg(setup.Memory.Regions[0].Info, needReply: true));
        Assert.True(dev.IsRunning);
    }
}
