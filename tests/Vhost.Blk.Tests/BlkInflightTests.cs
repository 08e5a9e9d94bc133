using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using Vhost.Interop;
using Vhost.Protocol;
using Vhost.Rings;
using Vhost.Testing.BackEnd;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;
using Vhost.Transport;

namespace Vhost.Blk.Tests;

/// <summary>
/// In-flight tracking as a restarted back-end sees it: the front-end hands over an area in which the dead
/// back-end left requests marked in flight, and they must run again, oldest first, before anything new,
/// while the one it had completed must not.
/// </summary>
public sealed class BlkInflightTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(10);

    [Fact]
    public void RequestsLeftInFlightAreResubmittedInPopOrderAndCompletedOnesAreNot()
    {
        using var disk = new MemoryDisk(1 << 20, "inflight");
        var logs = new CapturingLoggerProvider();
        using var lf = LoggerFactory.Create(b => b.AddProvider(logs));
        using var blk = new VirtioBlk(disk, new VirtioBlkOptions { LoggerFactory = lf });
        using var socket = new VhostUserSocket(blk.CreateSocketOptions(TestFrontEndListener.TempPath()));
        socket.Start();
        using var fe = TestFrontEnd.Connect(socket.Path, T);
        using var setup = new DeviceSetup(fe, new DeviceSetupOptions
        {
            QueueCount = 1,
            QueueSize = 16,
            ProtocolFeatures = DeviceSetupOptions.DefaultProtocolFeatures | (1UL << (int)ProtocolFeature.InflightShmfd),
        });
        setup.Negotiate();
        Assert.True((setup.AckedProtocolFeatures & (1UL << (int)ProtocolFeature.InflightShmfd)) != 0);
        setup.SendMemTable();

        var (info, fd) = fe.GetInflightFd(1, 16);
        Assert.NotNull(fd);
        Assert.True(info.MmapSize >= 16 + 16 * 16);
        using var area = MemoryMapping.Map(fd!, (nuint)info.MmapSize);
        var region = area.Window;

        using var q = setup.AllocateQueue(0);
        var ring = new DriverSplitRing(q, setup.Memory);
        byte[][] data = [BlkHarness.Pattern(512, 10), BlkHarness.Pattern(512, 11), BlkHarness.Pattern(512, 12), BlkHarness.Pattern(512, 13)];
        var ids = new ushort[4];
        var status = new ulong[4];
        for (int i = 0; i < 4; i++)
        {
            ulong h = setup.Memory.Allocate(16, 16), d = setup.Memory.Allocate(512, 64);
            status[i] = setup.Memory.Allocate(1);
            var hs = setup.Memory.Span(h, 16);
            BinaryPrimitives.WriteUInt32LittleEndian(hs, (uint)BlkRequestType.Out);
            BinaryPrimitives.WriteUInt64LittleEndian(hs[8..], (ulong)(8 * i));
            data[i].CopyTo(setup.Memory.Span(d, 512));
            setup.Memory.Span(status[i], 1)[0] = 0xff;
            ids[i] = ring.Add(new DriverBuffer(h, 16, false), new DriverBuffer(d, 512, false), new DriverBuffer(status[i], 1, true));
        }
        // the dead back-end popped all four (in the order 0, 3, 2 by counter) and completed request 1
        q.Used.Ref<uint>(4) = ids[1];
        q.Used.Ref<uint>(8) = 1;
        q.Used.Ref<ushort>(2) = 1;
        region.Ref<ushort>(8) = 1;           // version
        region.Ref<ushort>(10) = 16;         // desc_num
        region.Ref<ushort>(12) = ids[1];     // last_batch_head
        region.Ref<ushort>(14) = 1;          // used_idx
        void InFlight(ushort head, ulong counter)
        {
            region.Ref<byte>((nuint)(16 + 16 * head)) = 1;
            region.Ref<ulong>((nuint)(16 + 16 * head + 8)) = counter;
        }
        InFlight(ids[0], 3);
        InFlight(ids[3], 4);
        InFlight(ids[2], 5);

        // base 1: what QEMU sends for a split ring after losing a back-end (its used index)
        InflightRestart.Resume(fe, info, fd!, q, 1);

        Assert.Equal(ids[1], ring.WaitUsed(T).Id);   // the completion the dead back-end had published
        var order = new[] { ring.WaitUsed(T).Id, ring.WaitUsed(T).Id, ring.WaitUsed(T).Id };
        Assert.Equal([ids[0], ids[3], ids[2]], order);
        foreach (int i in new[] { 0, 2, 3 })
        {
            Assert.Equal(0, setup.Memory.Span(status[i], 1)[0]);
            Assert.Equal(data[i], disk.Content.Span((nuint)(8 * i * 512), 512).ToArray());
        }
        // request 1 had completed: running it again would have been wrong, and it was not
        Assert.Equal(0xff, setup.Memory.Span(status[1], 1)[0]);
        Assert.All(disk.Content.Span(8 * 512, 512).ToArray(), b => Assert.Equal(0, b));
        Assert.Equal(3, blk.TotalStats().Writes);
        Assert.Contains(logs.Lines, l => l.Text.Contains("3 request(s) were in flight", StringComparison.Ordinal));

        // the area is clean again and tracks new requests
        for (int h = 0; h < 16; h++) Assert.Equal(0, region.Ref<byte>((nuint)(16 + 16 * h)));
        Assert.Equal(4, region.Ref<ushort>(14));
        ulong hh = setup.Memory.Allocate(16, 16), s = setup.Memory.Allocate(1);
        BinaryPrimitives.WriteUInt32LittleEndian(setup.Memory.Span(hh, 16), (uint)BlkRequestType.Flush);
        ring.Add(new DriverBuffer(hh, 16, false), new DriverBuffer(s, 1, true));
        q.Kick();
        ring.WaitUsed(T);
        Assert.Equal(5, region.Ref<ushort>(14));

        // tracking costs no allocation per request either
        var worker = blk.Workers(socket.Devices[0])[0];
        ulong wh = setup.Memory.Allocate(16, 16), wd = setup.Memory.Allocate(4096, 64), ws = setup.Memory.Allocate(1);
        BinaryPrimitives.WriteUInt32LittleEndian(setup.Memory.Span(wh, 16), (uint)BlkRequestType.Out);
        void Round()
        {
            ring.Add(new DriverBuffer(wh, 16, false), new DriverBuffer(wd, 4096, false), new DriverBuffer(ws, 1, true));
            q.Kick();
            ring.WaitUsed(T);
        }
        for (int i = 0; i < 50; i++) Round();
        long before = worker.ServiceAllocatedBytes;
        for (int i = 0; i < 300; i++) Round();
        Assert.Equal(0, worker.ServiceAllocatedBytes - before);
        Assert.True(socket.Devices[0].Queue(0).InflightTracking);
    }

    [Fact]
    public void BadInflightDescriptionsAreRefused()
    {
        using var h = new BlkHarness();
        var (info, fd) = h.Fe.GetInflightFd(1, 16);
        Assert.NotNull(fd);
        // more queues than the device has, and an area smaller than it claims
        Assert.NotEqual(0UL, h.Fe.SetInflightFd(info with { NumQueues = 9 }, fd!, needReply: true));
        Assert.NotEqual(0UL, h.Fe.SetInflightFd(info with { MmapSize = info.MmapSize * 4 }, fd!, needReply: true));
        Assert.NotEqual(0UL, h.Fe.SetInflightFd(info with { QueueSize = 0 }, fd!, needReply: true));
        fd!.Dispose();
        h.AssertStillServes();
    }

    /// <summary>
    /// Packed ring: a back-end pops four requests (one through an indirect table; the ring wraps under them),
    /// completes two out of order in one batch and dies; the next back-end gets the same in-flight fd and the
    /// stale base a front-end sends after losing its back-end, and must resubmit exactly the two left, oldest
    /// first, from the descriptors kept in the area, then serve new requests at the right ring position.
    /// </summary>
    [Fact]
    public void PackedRingRequestsLeftInFlightAreResubmittedAfterTheBackEndDies()
    {
        const ushort QSize = 16;
        const ulong Inflight = 1UL << (int)ProtocolFeature.InflightShmfd;
        using var memory = FrontEndMemory.Create(16 << 20, 0x10_0000);
        var options = new DeviceSetupOptions
        {
            Packed = true,
            QueueCount = 1,
            QueueSize = QSize,
            ProtocolFeatures = DeviceSetupOptions.DefaultProtocolFeatures | Inflight,
        };

        // the first back-end: the core alone, with the test as its application
        using var first = new TestBackEnd(maxQueues: 1, extraProtocolFeatures: Inflight);
        var feA = first.Connect();
        using var setupA = new DeviceSetup(feA, options, memory);
        setupA.Negotiate();
        setupA.SendMemTable();
        var (info, inflightFd) = InflightRestart.ShareArea(feA, 1, QSize);
        using var areaFd = inflightFd;
        var q = setupA.SetUpQueue(0);
        setupA.EnableQueues();
        first.Ops.WaitFor("new");
        var devA = first.Ops.LastNew!;
        var ring = new DriverPackedRing(q, memory);
        var vq = devA.Queue(0);
        Assert.True(vq.InflightTracking);
        var chains = new DescriptorChain[8];
        var segs = new BufferSegment[32];

        // four round trips move the ring to slot 12, so the next requests wrap
        for (int i = 0; i < 4; i++)
        {
            ring.Add(new DriverBuffer(memory.Allocate(16, 16), 16, false), new DriverBuffer(memory.Allocate(512, 64), 512, false), new DriverBuffer(memory.Allocate(1), 1, true));
            using (vq.AccessLock.EnterScope())
            {
                Assert.Equal(1, vq.Pop(chains, segs));
                vq.PushUsed(chains[0], 1);
                vq.FlushUsed();
            }
            ring.WaitUsed(T);
        }

        byte[][] data = [BlkHarness.Pattern(512, 20), BlkHarness.Pattern(512, 21), BlkHarness.Pattern(512, 22), BlkHarness.Pattern(512, 23)];
        var ids = new ushort[4];
        var status = new ulong[4];
        for (int i = 0; i < 4; i++)
        {
            ulong h = memory.Allocate(16, 16), d = memory.Allocate(512, 64);
            status[i] = memory.Allocate(1);
            var hs = memory.Span(h, 16);
            BinaryPrimitives.WriteUInt32LittleEndian(hs, (uint)BlkRequestType.Out);
            BinaryPrimitives.WriteUInt64LittleEndian(hs[8..], (ulong)(8 * (i + 1)));
            data[i].CopyTo(memory.Span(d, 512));
            memory.Span(status[i], 1)[0] = 0xff;
            DriverBuffer[] chain = [new(h, 16, false), new(d, 512, false), new(status[i], 1, true)];
            ids[i] = i == 1 ? ring.AddIndirect(chain) : ring.Add(chain);   // slots 12-14, 15, 0-2, 3-5
        }
        using (vq.AccessLock.EnterScope())
        {
            Assert.Equal(4, vq.Pop(chains, segs));
            // requests 3 and 1 finish (the application wrote their status), in that order, in one batch
            memory.Span(status[3], 1)[0] = 0;
            memory.Span(status[1], 1)[0] = 0;
            vq.PushUsed(chains[3], 1);
            vq.PushUsed(chains[1], 1);
            vq.FlushUsed();
        }
        Assert.Equal(ids[3], ring.WaitUsed(T).Id);
        Assert.Equal(ids[1], ring.WaitUsed(T).Id);
        // the back-end dies: nothing more is written to the area or the ring
        feA.Dispose();
        var endA = DateTime.UtcNow + T;
        while (first.Socket.Devices.Count > 0 && DateTime.UtcNow < endA) Thread.Sleep(5);

        // the next back-end: a real blk device on the same disk, area, memory and rings
        using var disk = new MemoryDisk(1 << 20, "inflight-packed");
        var logs = new CapturingLoggerProvider();
        using var lf = LoggerFactory.Create(b => b.AddProvider(logs));
        using var blk = new VirtioBlk(disk, new VirtioBlkOptions { LoggerFactory = lf });
        using var socket = new VhostUserSocket(blk.CreateSocketOptions(TestFrontEndListener.TempPath()));
        socket.Start();
        using var feB = TestFrontEnd.Connect(socket.Path, T);
        using var setupB = new DeviceSetup(feB, options, memory);
        setupB.Negotiate();
        Assert.True(VirtioFeature.Has(setupB.AckedFeatures, VirtioFeature.RingPacked));
        setupB.SendMemTable();
        // QEMU cannot ask a dead back-end where a packed ring stopped: it sends the base of the last start
        InflightRestart.Resume(feB, info, inflightFd, q, 0x8000);

        var order = new[] { ring.WaitUsed(T).Id, ring.WaitUsed(T).Id };
        Assert.Equal([ids[0], ids[2]], order);
        Assert.Contains(logs.Lines, l => l.Text.Contains("2 request(s) were in flight", StringComparison.Ordinal));
        Assert.Equal(2, socket.Devices[0].Queue(0).InflightResubmitted);
        foreach (int i in new[] { 0, 2 })
        {
            Assert.Equal(0, memory.Span(status[i], 1)[0]);
            Assert.Equal(data[i], disk.Content.Span((nuint)(8 * (i + 1) * 512), 512).ToArray());
        }
        // 1 and 3 had completed: the new back-end did not run them again
        foreach (int i in new[] { 1, 3 })
            Assert.All(disk.Content.Span((nuint)(8 * (i + 1) * 512), 512).ToArray(), b => Assert.Equal(0, b));
        Assert.Equal(2, blk.TotalStats().Writes);

        // new requests are found where the driver put them (slot 6, second lap), and tracked again
        for (int round = 0; round < 3 * QSize; round++)
        {
            ulong h = memory.Allocate(16, 16), st = memory.Allocate(1);
            BinaryPrimitives.WriteUInt32LittleEndian(memory.Span(h, 16), (uint)BlkRequestType.Flush);
            memory.Span(st, 1)[0] = 0xff;
            ushort id = round % 2 == 0 ? ring.Add(new DriverBuffer(h, 16, false), new DriverBuffer(st, 1, true))
                : ring.AddIndirect(new DriverBuffer(h, 16, false), new DriverBuffer(st, 1, true));
            q.Kick();
            Assert.Equal(id, ring.WaitUsed(T).Id);
            Assert.Equal(0, memory.Span(st, 1)[0]);
        }
        using var area = MemoryMapping.Map(inflightFd, (nuint)info.MmapSize);
        for (int e = 0; e < QSize; e++) Assert.Equal(0, area.Window.Ref<byte>((nuint)(32 + 32 * e)));
        Assert.Equal(area.Window.Ref<ushort>(16), area.Window.Ref<ushort>(18));
        Assert.DoesNotContain(logs.Lines, l => l.Level >= LogLevel.Error);
    }
}
