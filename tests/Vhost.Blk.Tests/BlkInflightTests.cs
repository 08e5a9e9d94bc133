using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using Vhost.Interop;
using Vhost.Protocol;
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

        Assert.Equal(0UL, fe.SetInflightFd(info, fd!, needReply: true));
        Assert.Equal(0UL, fe.SetVringNum(0, 16, needReply: true));
        Assert.Equal(0UL, fe.SetVringAddr(q.Address, needReply: true));
        Assert.Equal(0UL, fe.SetVringBase(0, 1, needReply: true));   // what QEMU sends after losing a back-end: its used index
        Assert.Equal(0UL, fe.SetVringCall(0, q.CallFd, needReply: true));
        Assert.Equal(0UL, fe.SetVringKick(0, q.KickFd, needReply: true));
        Assert.Equal(0UL, fe.SetVringEnable(0, true, needReply: true));

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
}
