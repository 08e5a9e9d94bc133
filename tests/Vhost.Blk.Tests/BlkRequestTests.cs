using System.Buffers.Binary;
using Vhost.Device;
using Vhost.Protocol;
using Vhost.Testing.Rings;

namespace Vhost.Blk.Tests;

/// <summary>Each request type through a real socket and ring, on split and packed rings.</summary>
public sealed class BlkRequestTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void WriteThenReadReturnsTheSameBytes(bool packed)
    {
        using var h = new BlkHarness(packed);
        var data = BlkHarness.Pattern(8192, 1);
        // the data in two descriptors, the header sharing none with it
        ulong hdr = h.Header(BlkRequestType.Out, 16);
        ulong a = h.Alloc(4096), b = h.Alloc(4096), s = h.Alloc(1);
        data.AsSpan(0, 4096).CopyTo(h.Span(a, 4096));
        data.AsSpan(4096).CopyTo(h.Span(b, 4096));
        h.Span(s, 1)[0] = 0xff;
        var u = h.Run(new DriverBuffer(hdr, 16, false), new DriverBuffer(a, 4096, false), new DriverBuffer(b, 4096, false), new DriverBuffer(s, 1, true));
        Assert.Equal(1u, u.Length);
        Assert.Equal(0, h.Span(s, 1)[0]);
        Assert.Equal(data, ((MemoryDisk)h.Storage).Content.Span(16 * 512, 8192).ToArray());
        var (st, back) = h.Read(16, 8192);
        Assert.Equal(0, st);
        Assert.Equal(data, back);
        var stats = h.Blk.TotalStats();
        Assert.Equal(1, stats.Writes);
        Assert.Equal(1, stats.Reads);
        Assert.Equal(8192, stats.ReadBytes);
    }

    [Fact]
    public void HeaderAndDataInOneIndirectTableWork()
    {
        using var h = new BlkHarness();
        var data = BlkHarness.Pattern(512, 2);
        // header and data in one descriptor, status in another: the header may share a buffer with data
        ulong buf = h.Alloc(16 + 512), s = h.Alloc(1);
        h.Header(BlkRequestType.Out, 3, buf);
        data.CopyTo(h.Span(buf + 16, 512));
        ushort id = h.Rings[0].AddIndirect(new DriverBuffer(buf, 16 + 512, false), new DriverBuffer(s, 1, true));
        h.Setup[0].Kick();
        Assert.Equal(id, h.Rings[0].WaitUsed(BlkHarness.T).Id);
        Assert.Equal(0, h.Span(s, 1)[0]);
        Assert.Equal(data, h.Read(3, 512).Data);
    }

    [Fact]
    public void FlushSucceeds()
    {
        using var h = new BlkHarness();
        Assert.Equal(0, h.Command(BlkRequestType.Flush, 0));
        Assert.Equal(1, h.Blk.TotalStats().Flushes);
    }

    [Fact]
    public void FileBackedWritesReachTheFileAndFlushSyncs()
    {
        string path = Path.Combine(Path.GetTempPath(), $"blkt-{Guid.NewGuid():N}.img");
        try
        {
            using (var h = new BlkHarness(storage: new FileDisk(path, createSize: 1 << 20)))
            {
                var data = BlkHarness.Pattern(4096, 3);
                Assert.Equal(0, h.Write(8, data));
                Assert.Equal(0, h.Command(BlkRequestType.Flush, 0));
                Assert.Equal(data, h.Read(8, 4096).Data);
            }
            var file = File.ReadAllBytes(path);
            Assert.Equal(1 << 20, file.Length);
            Assert.Equal(BlkHarness.Pattern(4096, 3), file.AsSpan(8 * 512, 4096).ToArray());
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void GetIdReturnsTheSerial()
    {
        using var h = new BlkHarness();
        ulong hdr = h.Header(BlkRequestType.GetId, 0), id = h.Alloc(20), s = h.Alloc(1);
        var u = h.Run(new DriverBuffer(hdr, 16, false), new DriverBuffer(id, 20, true), new DriverBuffer(s, 1, true));
        Assert.Equal(0, h.Span(s, 1)[0]);
        Assert.Equal(21u, u.Length);
        Assert.Equal("blk-test-serial", System.Text.Encoding.ASCII.GetString(h.Span(id, 20)).TrimEnd('\0'));
    }

    [Fact]
    public void DiscardAndWriteZeroesClearTheirRanges()
    {
        using var h = new BlkHarness();
        var data = BlkHarness.Pattern(8 * 512, 4);
        Assert.Equal(0, h.Write(0, data));
        Assert.Equal(0, h.Write(64, data));
        Assert.Equal(0, h.Command(BlkRequestType.Discard, 0, BlkHarness.Ranges((0, 8, 0))));
        Assert.Equal(0, h.Command(BlkRequestType.WriteZeroes, 0, BlkHarness.Ranges((64, 4, 1), (68, 4, 0))));
        Assert.All(h.Read(0, 4096).Data, b => Assert.Equal(0, b));
        Assert.All(h.Read(64, 4096).Data, b => Assert.Equal(0, b));
        var st = h.Blk.TotalStats();
        Assert.Equal(1, st.Discards);
        Assert.Equal(1, st.WriteZeroes);
    }

    [Fact]
    public void UnknownTypesAreUnsupported()
    {
        using var h = new BlkHarness();
        Assert.Equal((byte)BlkStatus.Unsupp, h.Command(BlkRequestType.GetLifetime, 0));
        Assert.Equal((byte)BlkStatus.Unsupp, h.Command((BlkRequestType)77, 0));
        Assert.Equal((byte)BlkStatus.Unsupp, h.Command(BlkRequestType.SecureErase, 0, BlkHarness.Ranges((0, 8, 0))));
        h.AssertStillServes();
    }

    [Fact]
    public void MultiQueueServesEveryQueue()
    {
        using var h = new BlkHarness(queues: 2);
        Assert.Equal(2UL, h.Setup.ReportedQueueNum);
        var a = BlkHarness.Pattern(4096, 5);
        var b = BlkHarness.Pattern(4096, 6);
        Assert.Equal(0, h.Write(0, a, queue: 0));
        Assert.Equal(0, h.Write(8, b, queue: 1));
        Assert.Equal(a, h.Read(0, 4096, queue: 1).Data);
        Assert.Equal(b, h.Read(8, 4096, queue: 0).Data);
        Assert.Equal(2, h.Blk.QueueStats(0).Requests);
        Assert.Equal(2, h.Blk.QueueStats(1).Requests);
    }

    /// <summary>Requests complete when their storage does, out of order: VIRTIO_F_IN_ORDER must not be offered.</summary>
    [Fact]
    public void InOrderIsNotOffered()
    {
        using var disk = new MemoryDisk(1 << 20, "in-order");
        using var blk = new VirtioBlk(disk, new VirtioBlkOptions());
        Assert.False(VirtioFeature.Has(blk.Features, VirtioFeature.InOrder));
        Assert.True(VirtioFeature.Has(blk.Features, VirtioFeature.RingPacked));
    }

    [Fact]
    public void ConfigSpaceDescribesTheDisk()
    {
        using var h = new BlkHarness(queues: 2, capacity: 8 << 20);
        var cfg = h.Fe.GetConfig(0, 60)!.Data;
        Assert.Equal((ulong)(8 << 20) / 512, BinaryPrimitives.ReadUInt64LittleEndian(cfg));
        Assert.Equal(126u, BinaryPrimitives.ReadUInt32LittleEndian(cfg.AsSpan(12)));
        Assert.Equal(512u, BinaryPrimitives.ReadUInt32LittleEndian(cfg.AsSpan(20)));
        Assert.Equal(1, cfg[32]);
        Assert.Equal(2, BinaryPrimitives.ReadUInt16LittleEndian(cfg.AsSpan(34)));
        Assert.Equal(16u, BinaryPrimitives.ReadUInt32LittleEndian(cfg.AsSpan(40)));
        Assert.Equal(16u, BinaryPrimitives.ReadUInt32LittleEndian(cfg.AsSpan(52)));
        Assert.Equal(1, cfg[56]);
        // beyond what we describe: zeros, not a refusal
        Assert.All(h.Fe.GetConfig(60, 8)!.Data, b => Assert.Equal(0, b));
        ulong features = h.Setup.OfferedFeatures;
        foreach (int bit in new[] { BlkFeature.SizeMax, BlkFeature.SegMax, BlkFeature.BlkSize, BlkFeature.Flush, BlkFeature.Topology,
                     BlkFeature.ConfigWce, BlkFeature.Mq, BlkFeature.Discard, BlkFeature.WriteZeroes })
            Assert.True(VirtioFeature.Has(features, bit), $"feature {bit}");
        Assert.False(VirtioFeature.Has(features, BlkFeature.ReadOnly));
        Assert.True((h.Setup.OfferedProtocolFeatures & (1UL << (int)ProtocolFeature.Config)) != 0);
    }

    [Fact]
    public void ConfigWceSwitchesToWriteThrough()
    {
        using var h = new BlkHarness();
        Assert.True(h.Blk.WritebackCache);
        Assert.Equal(0UL, h.Fe.SetConfig(32, [0], needReply: true));
        Assert.False(h.Blk.WritebackCache);
        Assert.Equal(0, h.Fe.GetConfig(32, 1)!.Data[0]);
        // the capacity is not the driver's to write
        Assert.NotEqual(0UL, h.Fe.SetConfig(0, new byte[8], needReply: true));
        h.AssertStillServes();
    }

    [Fact]
    public void ZeroAllocationPerRequest()
    {
        using var h = new BlkHarness();
        ulong hdrW = h.Header(BlkRequestType.Out, 0), hdrR = h.Header(BlkRequestType.In, 0), hdrF = h.Header(BlkRequestType.Flush, 0);
        ulong d = h.Alloc(4096), s = h.Alloc(1);
        var worker = h.Blk.Workers(h.Device)[0];
        void Round()
        {
            h.Run(new DriverBuffer(hdrW, 16, false), new DriverBuffer(d, 4096, false), new DriverBuffer(s, 1, true));
            h.Run(new DriverBuffer(hdrR, 16, false), new DriverBuffer(d, 4096, true), new DriverBuffer(s, 1, true));
            h.Run(new DriverBuffer(hdrF, 16, false), new DriverBuffer(s, 1, true));
        }
        for (int i = 0; i < 50; i++) Round();
        long before = worker.ServiceAllocatedBytes;
        for (int i = 0; i < 500; i++) Round();
        Assert.Equal(0, h.Span(s, 1)[0]);
        Assert.Equal(0, worker.ServiceAllocatedBytes - before);
        Assert.True(h.Blk.TotalStats().Requests >= 1650);
    }
}

public sealed class BlkSlowStorageTests
{
    [Fact]
    public void SlowStorageCompletesOutOfOrderWithoutStallingTheRing()
    {
        using var h = new BlkHarness(latency: TimeSpan.FromMilliseconds(20));
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var ring = (DriverSplitRing)h.Rings[0];
        for (int i = 0; i < 10; i++)
        {
            // as Linux does: ask for an interrupt at the next used element
            ring.SetUsedEvent(ring.UsedIndex);
            h.Setup[0].ConsumeCalls();
            Assert.Equal(0, h.Write((ulong)i * 128, BlkHarness.Pattern(4096, i)));
            Assert.True(h.Setup[0].WaitCall(BlkHarness.T), $"no interrupt for write {i}");
        }
        var sequential = sw.Elapsed;
        // sequential requests: each costs the storage's latency, not a polling period
        Assert.True(sequential < TimeSpan.FromMilliseconds(10 * 100), $"10 sequential writes took {sequential.TotalMilliseconds:F0} ms");

        // the hand-off to the I/O threads and back allocates nothing
        var worker = h.Blk.Workers(h.Device)[0];
        ulong wh = h.Header(BlkRequestType.Out, 0), wd = h.Alloc(4096), ws = h.Alloc(1);
        void Round()
        {
            ring.Add(new DriverBuffer(wh, 16, false), new DriverBuffer(wd, 4096, false), new DriverBuffer(ws, 1, true));
            h.Setup[0].Kick();
            ring.WaitUsed(BlkHarness.T);
        }
        for (int i = 0; i < 5; i++) Round();
        long before = worker.ServiceAllocatedBytes;
        for (int i = 0; i < 20; i++) Round();
        Assert.Equal(0, worker.ServiceAllocatedBytes - before);

        // three writes in one kick, the slowest first: they complete as the storage finishes them
        var ids = new ushort[3];
        ulong[] sectors = [256, 128, 0];
        for (int i = 0; i < 3; i++)
        {
            ulong hdr = h.Header(BlkRequestType.Out, sectors[i]), d = h.Alloc(512), st = h.Alloc(1);
            ids[i] = ring.Add(new DriverBuffer(hdr, 16, false), new DriverBuffer(d, 512, false), new DriverBuffer(st, 1, true));
        }
        h.Setup[0].Kick();
        var order = Enumerable.Range(0, 3).Select(_ => ring.WaitUsed(BlkHarness.T).Id).ToArray();
        Assert.Equal(ids.Order(), order.Order());
        Assert.NotEqual(ids, order);
        Assert.NotEqual(ids[0], order[0]);
    }
}
