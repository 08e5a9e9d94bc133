using Vhost.Device;
using Vhost.Protocol;
using Vhost.Testing.BackEnd;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;

namespace Vhost.Net.Tests;

/// <summary>
/// The dirty-log tests snapshot guest memory (megabytes per round), and the garbage collections that causes on
/// their threads move GC.GetAllocatedBytesForCurrentThread on the allocation tests' threads although those
/// allocate nothing (seen with a test that only allocates 4 MiB arrays beside BurstLoopAllocatesNothing): so they
/// run alone, never beside another test.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class DirtyLogCollection
{
    public const string Name = "Dirty log";
}

/// <summary>
/// Issue 23's protocol-level check for net: logging started as QEMU starts it at a migration's beginning, receive
/// traffic into the guest while a thread clears the log as QEMU does, and every page the back-end changed must
/// have been seen dirty; after GET_VRING_BASE nothing in guest memory changes any more.
/// </summary>
/// <remarks>
/// What counts as "changed by the back-end": each round has a driver phase, in which the test (the guest driver)
/// reaps used buffers, which only reads, and posts new ones, which writes descriptors and the avail ring (and on
/// a packed ring the descriptor ring the device writes back into too), while the device does nothing (the test is
/// also the application, and nothing calls EnqueueBurst then). Then a snapshot of all guest memory, then the
/// device phase: EnqueueBurst and nothing from the driver. Every page that differs between that snapshot and one
/// after the bursts was written by the back-end, so it must be marked. Comparing per round, not against one
/// snapshot taken at the start, is what lets the driver keep refilling the ring (and wrap it) without its own
/// writes counting; a device write the driver overwrote later is then still caught in its own round. Rings,
/// buffers and headers lie on separate pages (the set-up aligns ring parts to pages, the test its buffer blocks),
/// so a page is not marked merely because a neighbour on it was logged.
/// </remarks>
[Collection(DirtyLogCollection.Name)]
public sealed class NetDirtyLogTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(10);

    private const ulong LogShmfd = 1UL << (int)ProtocolFeature.LogShmfd;

    private sealed class LoggedNet : IDisposable
    {
        public readonly TestBackEnd Be;
        public readonly TestFrontEnd Fe;
        public readonly DeviceSetup Setup;
        public readonly VhostDevice Dev;
        public readonly DriverRing Rx, Tx;

        public LoggedNet(bool packed, bool eventIdx, ushort queueSize)
        {
            Be = new TestBackEnd(extraFeatures: NetFeatures.Default);
            Fe = Be.Connect();
            // LOG_ALL is not negotiated at bring-up: QEMU sets it when the migration starts
            ulong want = ~(VirtioFeature.Bit(VirtioFeature.LogAll) | VirtioFeature.Bit(VirtioFeature.AccessPlatform) | VirtioFeature.Bit(VirtioFeature.RingPacked));
            if (!eventIdx) want &= ~VirtioFeature.Bit(VirtioFeature.RingEventIdx);
            Setup = DeviceSetup.Run(Fe, new DeviceSetupOptions
            {
                Packed = packed,
                QueueSize = queueSize,
                MemorySize = 4 << 20,
                Features = want,
                ProtocolFeatures = DeviceSetupOptions.DefaultProtocolFeatures | LogShmfd,
            });
            Be.Ops.WaitFor("new");
            Dev = Be.Ops.LastNew!;
            Assert.Equal(eventIdx, Dev.HasFeature(VirtioFeature.RingEventIdx));
            Assert.True(Dev.HasFeature(NetFeatures.MrgRxbuf));
            Rx = DriverRing.Create(Setup[0], Setup.Memory);
            Tx = DriverRing.Create(Setup[1], Setup.Memory);
            if (Tx is DriverPackedRing ptx) ptx.InOrder = Dev.HasFeature(VirtioFeature.InOrder);
        }

        public FrontEndMemory Memory => Setup.Memory;

        /// <summary>A block of <paramref name="bytes"/> starting on a page of its own.</summary>
        public ulong Block(ulong bytes) => Memory.Allocate((bytes + 4095) & ~4095UL, 4096);

        public void Dispose()
        {
            Setup.Dispose();
            Fe.Dispose();
            Be.Dispose();
        }
    }

    public enum RxPath
    {
        /// <summary>One-buffer frames into one-descriptor buffers: Virtqueue.Fill.</summary>
        Fill,
        /// <summary>Frames spread over several mergeable buffers, and buffers of two descriptors: the general path.</summary>
        General,
    }

    private static byte[] Frame(int size, int seed)
    {
        var f = new byte[size];
        new Random(seed).NextBytes(f);
        f[0] = 0x02; // unicast
        return f;
    }

    /// <summary>Pages whose change the log does not show, with what lies there, for the failure message.</summary>
    private static string Missing(IEnumerable<ulong> changed, MigrationLog log, Func<ulong, string> where)
    {
        var missing = changed.Where(p => !log.IsSeen(p)).ToList();
        return missing.Count == 0 ? "" : $"{missing.Count} changed page(s) not marked: {string.Join(", ", missing.Select(p => $"0x{p:x} ({where(p)})"))}";
    }

    [Theory]
    [InlineData(false, false, RxPath.Fill)]
    [InlineData(false, true, RxPath.Fill)]
    [InlineData(true, false, RxPath.Fill)]
    [InlineData(true, true, RxPath.Fill)]
    [InlineData(false, false, RxPath.General)]
    [InlineData(false, true, RxPath.General)]
    [InlineData(true, false, RxPath.General)]
    [InlineData(true, true, RxPath.General)]
    public void EveryPageTheReceivePathChangesIsMarkedInTheLog(bool packed, bool eventIdx, RxPath path)
    {
        // a 1024-entry ring and 30 rounds of 24 descriptors (18 to 24 used elements): the split used ring spans three
        // pages, and its second one is written only by used elements (the first holds the flags, the third avail_event);
        // the packed descriptor ring spans four
        using var n = new LoggedNet(packed, eventIdx, queueSize: 1024);
        using var pool = new PacketPool(128);
        const int Rounds = 30;
        const int FillFrames = 24, Merged = 4, MergePieces = 3, Chained = 6;
        const uint FillBuf = 2048, MergeBuf = 1024, ChainHead = 16, ChainData = 2048;

        // the guest's receive buffers, each kind in blocks of pages of its own
        var names = new Dictionary<ulong, string>();
        void Name(ulong gpa, ulong len, string what)
        {
            for (ulong p = gpa >> 12; p <= (gpa + len - 1) >> 12; p++) names.TryAdd(p, what);
        }
        var q0 = n.Setup[0];
        Name(q0.DescGpa, 16UL * q0.Size, packed ? "rx descriptor ring" : "rx descriptor table");
        Name(q0.AvailGpa, packed ? 4 : 6 + 2UL * q0.Size, packed ? "rx driver event area" : "rx avail ring");
        Name(q0.UsedGpa, packed ? 4 : 6 + 8UL * q0.Size, packed ? "rx device event area" : "rx used ring");
        ulong fillBlock = n.Block(FillFrames * FillBuf);
        Name(fillBlock, FillFrames * FillBuf, "one-descriptor buffers");
        ulong mergeBlock = n.Block(Merged * MergePieces * MergeBuf);
        Name(mergeBlock, Merged * MergePieces * MergeBuf, "mergeable buffers");
        ulong headBlock = n.Block(Chained * ChainHead);
        Name(headBlock, Chained * ChainHead, "header descriptors of chained buffers");
        ulong chainBlock = n.Block(Chained * ChainData);
        Name(chainBlock, Chained * ChainData, "data descriptors of chained buffers");
        string Where(ulong page) => names.TryGetValue(page, out var s) ? s : "?";

        using var log = new MigrationLog(n.Memory);
        log.StartLogging(n.Fe, n.Setup);
        Assert.True(n.Dev.IsLogging);
        Assert.True(n.Dev.Queue(0).Logging);
        log.StartClearing();

        var required = new HashSet<ulong>();
        var pkts = new List<Packet>();
        long sent = 0;
        for (int round = 0; round < Rounds; round++)
        {
            // driver phase: the last round's buffers come back (reads only), this round's go out
            while (n.Rx.TryGetUsed(out _)) { }
            pkts.Clear();
            if (path == RxPath.Fill)
            {
                for (int i = 0; i < FillFrames; i++)
                {
                    n.Rx.Add(new DriverBuffer(fillBlock + (ulong)i * FillBuf, FillBuf, true));
                    Assert.True(pool.TryCreate(Frame(60 + 61 * i, round * 100 + i), out var p));
                    pkts.Add(p);
                }
            }
            else
            {
                for (int i = 0; i < Merged * MergePieces; i++) n.Rx.Add(new DriverBuffer(mergeBlock + (ulong)i * MergeBuf, MergeBuf, true));
                for (int i = 0; i < Chained; i++)
                {
                    n.Rx.Add(new DriverBuffer(headBlock + (ulong)i * ChainHead, ChainHead, true),
                        new DriverBuffer(chainBlock + (ulong)i * ChainData, ChainData, true));
                }
                // a frame of two pool buffers does not take the fast path; nor does any frame meeting a chained buffer
                for (int i = 0; i < Merged; i++)
                {
                    Assert.True(pool.TryCreate(Frame(2900 + i, round * 100 + i), out var p));
                    Assert.True(p.Meta.Next >= 0);
                    pkts.Add(p);
                }
                for (int i = 0; i < Chained; i++)
                {
                    Assert.True(pool.TryCreate(Frame(200 + 300 * i, round * 100 + 50 + i), out var p));
                    pkts.Add(p);
                }
            }
            var before = GuestSnapshot.Take(n.Memory);
            // device phase: the bursts, nothing from the driver
            Assert.Equal(pkts.Count, VirtioNet.EnqueueBurst(n.Dev, 0, pkts.ToArray()));
            sent += pkts.Count;
            var after = GuestSnapshot.Take(n.Memory);
            pool.Free(pkts.ToArray());
            var changed = before.ChangedPages(after);
            Assert.Contains(changed, p => Where(p).Contains("buffers", StringComparison.Ordinal));
            // the burst is over, so its bits are in the log (flushed at its end): one more pass of the clearer sees them
            log.WaitPass(T);
            Assert.True(Missing(changed, log, Where) == "", $"round {round}, after the burst: {Missing(changed, log, Where)}");
            required.UnionWith(changed);
        }

        // buffers the device could still fill after the stop: it must not
        while (n.Rx.TryGetUsed(out _)) { }
        for (int i = 0; i < 8; i++) n.Rx.Add(new DriverBuffer(fillBlock + (ulong)i * FillBuf, FillBuf, true));
        var beforeStop = GuestSnapshot.Take(n.Memory);
        foreach (var q in n.Setup.Queues) n.Fe.GetVringBase(q.Index);
        // after the last reply: the last merge
        log.StopClearing();
        var stopped = GuestSnapshot.Take(n.Memory);
        required.UnionWith(beforeStop.ChangedPages(stopped));
        Assert.True(Missing(required, log, Where) == "", $"at the end: {Missing(required, log, Where)}");
        Assert.Equal(sent, VirtioNet.Stats(n.Dev, 0).Packets);

        // the device stopped: an application that goes on sending changes nothing, and nothing is logged
        Assert.True(pool.TryCreate(Frame(100, 7), out var late));
        Assert.Equal(0, VirtioNet.EnqueueBurst(n.Dev, 0, [late]));
        pool.Free(late);
        n.Fe.GetFeatures();   // a round trip: whatever the device's reactor had queued has run
        var later = GuestSnapshot.Take(n.Memory);
        Assert.Empty(stopped.ChangedPages(later).Select(Where));
        Assert.Equal(0, log.Sync());
    }

    /// <summary>BurstLoopAllocatesNothing (NetDataPathTests) with the migration's log on: marking pages costs no allocation either.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void BurstLoopAllocatesNothingWhileLogging(bool packed)
    {
        using var n = new LoggedNet(packed, eventIdx: true, queueSize: 256);
        using var pool = new PacketPool(256);
        using var log = new MigrationLog(n.Memory);
        log.StartLogging(n.Fe, n.Setup);
        Assert.True(n.Dev.IsLogging);
        var hdr = new byte[12];
        var frame = Frame(64, 1);
        ulong txBuf = n.Block(76);
        hdr.CopyTo(n.Memory.Span(txBuf, 12));
        frame.CopyTo(n.Memory.Span(txBuf + 12, 64));
        ulong rxBuf = n.Block(2048);
        // a chained receive buffer: the general path and its PushUsed with segments, beside Fill's
        ulong rxHead = n.Block(12), rxData = n.Block(2048);
        var pkts = new Packet[32];
        var tx = n.Tx;
        var rx = n.Rx;
        tx.Add(new DriverBuffer(txBuf, 76, false));
        void Post(int i)
        {
            if (i % 2 == 0) rx.Add(new DriverBuffer(rxBuf, 2048, true));
            else rx.Add(new DriverBuffer(rxHead, 12, true), new DriverBuffer(rxData, 2048, true));
        }
        for (int i = 0; i < 1000; i++)
        {
            Assert.Equal(1, VirtioNet.DequeueBurst(n.Dev, 1, pool, pkts));
            Assert.True(tx.TryGetUsed(out _));
            Post(i);
            Assert.Equal(1, VirtioNet.EnqueueBurst(n.Dev, 0, pkts.AsSpan(0, 1)));
            Assert.True(rx.TryGetUsed(out _));
            pool.Free(pkts[0]);
            tx.Add(new DriverBuffer(txBuf, 76, false));
        }
        log.Sync();
        log.ForgetSeen();
        // the driver-side helpers allocate (they are test code); measure only the back-end's bursts
        // a garbage collection inside a measured window (the driver helpers' garbage, or another test's) moves the
        // thread's count by what its allocation context had left: such windows are not counted, and must be few
        long total = 0;
        int measured = 0;
        for (int i = 0; i < 20_000; i++)
        {
            int gcs = GC.CollectionCount(0);
            long before = GC.GetAllocatedBytesForCurrentThread();
            int got = VirtioNet.DequeueBurst(n.Dev, 1, pool, pkts);
            long bytes = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.Equal(1, got);
            tx.TryGetUsed(out _);
            Post(i);
            before = GC.GetAllocatedBytesForCurrentThread();
            int sent = VirtioNet.EnqueueBurst(n.Dev, 0, pkts.AsSpan(0, 1));
            pool.Free(pkts[0]);
            bytes += GC.GetAllocatedBytesForCurrentThread() - before;
            if (GC.CollectionCount(0) == gcs)
            {
                total += bytes;
                measured++;
            }
            Assert.Equal(1, sent);
            rx.TryGetUsed(out _);
            tx.Add(new DriverBuffer(txBuf, 76, false));
        }
        Assert.Equal(0, total);
        Assert.True(measured > 19_000, $"only {measured} of 20000 bursts ran without a collection");
        // and it did log: both kinds of receive buffer and the rings the device wrote
        log.Sync();
        Assert.True(log.IsSeen(rxBuf >> 12), "the one-descriptor buffer was not marked");
        Assert.True(log.IsSeen(rxData >> 12), "the chained buffer was not marked");
        Assert.True(log.IsSeen(n.Setup[0].UsedGpa >> 12) || packed, "the used ring was not marked");
        Assert.True(log.IsSeen(n.Setup[0].DescGpa >> 12) || !packed, "the packed descriptor ring was not marked");
    }
}
