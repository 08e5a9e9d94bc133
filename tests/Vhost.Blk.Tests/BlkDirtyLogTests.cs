using System.Buffers.Binary;
using Vhost.Interop;
using Vhost.Protocol;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;

namespace Vhost.Blk.Tests;

/// <summary>A RAM disk that says it is slow (so requests go to the I/O pool) and can hold its I/O threads at a gate.</summary>
internal sealed class GatedDisk(long capacity) : IBlockStorage
{
    private const int EIo = 5;
    private readonly MemoryDisk _inner = new(capacity, "gated-disk-serial");

    /// <summary>Open: requests pass; reset it to hold every I/O thread inside its read or write.</summary>
    public readonly ManualResetEventSlim Open = new(true);

    /// <summary>Released as each read or write begins.</summary>
    public readonly SemaphoreSlim Entered = new(0);

    public NativeWindow Content => _inner.Content;

    public long Capacity => _inner.Capacity;

    public bool IsReadOnly => false;

    public bool IsSlow => true;

    public string Serial => _inner.Serial;

    public int Read(long offset, NativeWindow destination)
    {
        Entered.Release();
        return Open.Wait(BlkHarness.T) ? _inner.Read(offset, destination) : EIo;
    }

    public int Write(long offset, NativeWindow source)
    {
        Entered.Release();
        return Open.Wait(BlkHarness.T) ? _inner.Write(offset, source) : EIo;
    }

    public int Flush() => 0;

    public int Discard(long offset, long length) => _inner.Discard(offset, length);

    public int WriteZeroes(long offset, long length, bool mayUnmap) => _inner.WriteZeroes(offset, length, mayUnmap);

    public void Dispose()
    {
        Open.Set();
        _inner.Dispose();
    }
}

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
/// Issue 23's protocol-level check for blk: logging started as QEMU starts it at a migration's beginning, reads
/// (data into guest buffers), writes, GET_ID and the status byte of each, while a thread clears the log as QEMU
/// does; every page the back-end changed must have been seen dirty by the time GET_VRING_BASE has replied, and
/// nothing in guest memory changes after that reply.
/// </summary>
/// <remarks>
/// As in NetDirtyLogTests, each round has a driver phase (the test reaps the last round's used elements, which
/// only reads, and writes headers, status bytes 0xff, GET_ID buffers and the ring for this round's requests),
/// then a snapshot of all guest memory, then the kick and the device's work while the driver only reads. Every
/// page that differs between that snapshot and the next round's driver phase was written by the back-end. Unlike
/// net, the bits need not be in the log when the driver sees the used element (the burst marks them at its end,
/// after publishing), so the check is made once, after the GET_VRING_BASE reply, over all rounds. The last round
/// is still running when GET_VRING_BASE comes; on the I/O pool its requests are held inside the storage until the
/// queue is draining, so the reply must wait for them and for their bits.
/// </remarks>
[Collection(DirtyLogCollection.Name)]
public sealed class BlkDirtyLogTests
{
    private static readonly TimeSpan T = BlkHarness.T;
    private const ulong LogShmfd = 1UL << (int)ProtocolFeature.LogShmfd;

    private enum Kind { Read4k, ReadTwoSegments, Read512, Write, GetId }

    private static Kind KindOf(int i) => i switch
    {
        < 6 => Kind.Read4k,
        < 10 => Kind.ReadTwoSegments,
        < 12 => Kind.Read512,
        < 15 => Kind.Write,
        _ => Kind.GetId,
    };

    [Theory]
    [InlineData(false, false, false)]
    [InlineData(false, true, false)]
    [InlineData(true, false, false)]
    [InlineData(true, true, false)]
    [InlineData(false, false, true)]
    [InlineData(false, true, true)]
    [InlineData(true, true, true)]
    [InlineData(true, false, true)]
    public void EveryPageARequestChangesIsMarkedInTheLog(bool packed, bool eventIdx, bool ioPool)
    {
        // a 1024-entry ring and 640 requests: the split used ring spans three pages and its second one is written only
        // by used elements (the first holds the flags the notification switches write too, the third avail_event)
        const int Requests = 16, Rounds = 40;
        var gated = ioPool ? new GatedDisk(4 << 20) : null;
        using var h = new BlkHarness(packed, storage: gated, queueSize: 1024, memorySize: 4 << 20, extraProtocolFeatures: LogShmfd,
            dropFeatures: eventIdx ? 0 : VirtioFeature.Bit(VirtioFeature.RingEventIdx));
        Assert.Equal(eventIdx, h.Device.HasFeature(VirtioFeature.RingEventIdx));
        var disk = gated?.Content ?? ((MemoryDisk)h.Storage).Content;
        new Random(23).NextBytes(disk.AsSpan());
        var ring = h.Rings[0];
        var q = h.Setup[0];

        // each kind of guest bytes on pages of its own
        var names = new Dictionary<ulong, string>();
        ulong Block(ulong bytes, string what)
        {
            ulong gpa = h.Memory.Allocate((bytes + 4095) & ~4095UL, 4096);
            Name(gpa, bytes, what);
            return gpa;
        }
        void Name(ulong gpa, ulong bytes, string what)
        {
            for (ulong p = gpa >> 12; p <= (gpa + bytes - 1) >> 12; p++) names[p] = what;
        }
        Name(q.DescGpa, 16UL * q.Size, packed ? "descriptor ring" : "descriptor table");
        Name(q.AvailGpa, packed ? 4 : 6 + 2UL * q.Size, packed ? "driver event area" : "avail ring");
        Name(q.UsedGpa, packed ? 4 : 6 + 8UL * q.Size, packed ? "device event area" : "used ring");
        ulong headers = Block(Requests * 16, "request headers");
        ulong status = Block(Requests, "status bytes");
        // 4 KiB reads into buffers that straddle two pages
        ulong read4k = Block(6 * 8192, "4 KiB read buffers");
        // 3 KiB reads in two segments, each on its own page
        ulong twoSeg = Block(4 * 8192, "two-segment read buffers");
        ulong read512 = Block(2 * 4096, "512-byte read buffers");
        ulong writes = Block(3 * 4096, "write data (device reads only)");
        ulong getId = Block(4096, "GET_ID buffer");
        string Where(ulong page) => names.TryGetValue(page, out var s) ? s : "?";

        using var log = new MigrationLog(h.Memory);
        log.StartLogging(h.Fe, h.Setup);
        Assert.True(h.Device.IsLogging);
        log.StartClearing();

        var required = new HashSet<ulong>();
        GuestSnapshot? before = null;
        ushort usedBase = 0;
        for (int round = 0; round < Rounds; round++)
        {
            bool last = round == Rounds - 1;
            // driver phase: the device is idle (every request of the last round is back)
            var dp = GuestSnapshot.Take(h.Memory);
            if (before != null) required.UnionWith(before.ChangedPages(dp));
            var ids = new ushort[Requests];
            for (int i = 0; i < Requests; i++)
            {
                var kind = KindOf(i);
                ulong hdr = headers + (ulong)i * 16, st = status + (ulong)i;
                ulong sector = kind == Kind.Write ? (ulong)(6144 + 8 * i) : (ulong)(8 * (round * Requests + i));
                h.Header(kind switch { Kind.Write => BlkRequestType.Out, Kind.GetId => BlkRequestType.GetId, _ => BlkRequestType.In }, sector, hdr);
                h.Span(st, 1)[0] = 0xff;
                var hb = new DriverBuffer(hdr, 16, false);
                var sb = new DriverBuffer(st, 1, true);
                ids[i] = kind switch
                {
                    Kind.Read4k => ring.Add(hb, new DriverBuffer(read4k + (ulong)i * 8192 + 2048, 4096, true), sb),
                    Kind.ReadTwoSegments => ring.Add(hb, new DriverBuffer(twoSeg + (ulong)(i - 6) * 8192, 2048, true),
                        new DriverBuffer(twoSeg + (ulong)(i - 6) * 8192 + 4096 + 512, 1024, true), sb),
                    Kind.Read512 => ring.Add(hb, new DriverBuffer(read512 + (ulong)(i - 10) * 4096 + 1000, 512, true), sb),
                    Kind.Write => WriteRequest(i),
                    _ => GetIdRequest(),
                };
                ushort WriteRequest(int k)
                {
                    ulong d = writes + (ulong)(k - 12) * 4096;
                    new Random(round * 100 + k).NextBytes(h.Span(d, 4096));
                    return ring.Add(hb, new DriverBuffer(d, 4096, false), sb);
                }
                ushort GetIdRequest()
                {
                    // cleared each round, so the device's serial changes the page again
                    h.Span(getId, 20).Clear();
                    return ring.Add(hb, new DriverBuffer(getId, 20, true), sb);
                }
            }
            // split with event index: one interrupt when the round's last request is back (as Linux asks)
            if (ring is DriverSplitRing split && eventIdx) split.SetUsedEvent((ushort)(usedBase + Requests - 1));
            q.ConsumeCalls();
            before = GuestSnapshot.Take(h.Memory);
            // the device phase
            if (last && gated != null)
            {
                while (gated.Entered.Wait(0)) { }
                gated.Open.Reset();
            }
            q.Kick();
            if (last) break;
            var used = WaitUsed(ring, q, Requests);
            usedBase += Requests;
            Assert.Equal(ids.Order(), used.Select(u => u.Id).Order());
            for (int i = 0; i < Requests; i++) Assert.Equal(0, h.Span(status + (ulong)i, 1)[0]);
        }

        // GET_VRING_BASE while the last round runs: on the pool its requests are inside the storage until the queue drains
        uint stoppedAt = 0;
        Exception? stopFailed = null;
        using var replied = new ManualResetEventSlim();
        void Stop()
        {
            try { stoppedAt = h.Fe.GetVringBase(0); }
            catch (Exception e) { stopFailed = e; }
            replied.Set();
        }
        if (gated != null)
        {
            Assert.True(gated.Entered.Wait(T), "no request reached the storage");
            new Thread(Stop) { IsBackground = true }.Start();
            Assert.True(SpinWait.SpinUntil(() => h.Device.Queue(0).Draining, T), "GET_VRING_BASE never began draining");
            Assert.False(replied.IsSet, "GET_VRING_BASE replied while requests were inside the storage");
            Assert.True(h.Device.Queue(0).WorkInFlight > 0);
            gated.Open.Set();
        }
        else
        {
            Stop();
        }
        Assert.True(replied.Wait(T), "no GET_VRING_BASE reply");
        Assert.Null(stopFailed);
        // after the reply: the last merge
        log.StopClearing();
        var stopped = GuestSnapshot.Take(h.Memory);
        required.UnionWith(before!.ChangedPages(stopped));
        Assert.Contains(required, p => Where(p) == "status bytes");
        Assert.Contains(required, p => Where(p).Contains("read buffers", StringComparison.Ordinal));
        Assert.Contains(required, p => Where(p) == "GET_ID buffer");
        var missing = required.Where(p => !log.IsSeen(p)).ToList();
        Assert.True(missing.Count == 0,
            $"{missing.Count} changed page(s) not marked in the log: {string.Join(", ", missing.Select(p => $"0x{p:x} ({Where(p)})"))}");

        // everything begun before the stop was finished before the reply, and the base counts it
        int done = 0;
        while (ring.TryGetUsed(out _)) done++;
        // (split: the avail index; a packed ring's base counts descriptors, three or four per request here)
        if (!packed) Assert.Equal((uint)(usedBase + done), stoppedAt);
        if (gated != null) Assert.Equal(Requests, done);

        // the device stopped: a kick and a round trip later nothing in guest memory has changed, nothing is logged
        q.Kick();
        h.Fe.GetFeatures();
        var later = GuestSnapshot.Take(h.Memory);
        Assert.Empty(stopped.ChangedPages(later).Select(Where));
        Assert.Equal(0, log.Sync());
    }

    private static List<UsedElement> WaitUsed(DriverRing ring, QueueSetup q, int count)
    {
        var got = new List<UsedElement>();
        while (true)
        {
            while (ring.TryGetUsed(out var u)) got.Add(u);
            if (got.Count >= count) return got;
            Assert.True(q.WaitCall(T), $"no interrupt after {got.Count} of {count} used elements");
        }
    }

    /// <summary>ZeroAllocationPerRequest (BlkRequestTests) with the migration's log on: the reactor's requests.</summary>
    [Fact]
    public void ZeroAllocationPerRequestWhileLogging()
    {
        using var h = new BlkHarness(extraProtocolFeatures: LogShmfd);
        using var log = new MigrationLog(h.Memory);
        log.StartLogging(h.Fe, h.Setup);
        Assert.True(h.Device.IsLogging);
        ulong hdrW = h.Header(BlkRequestType.Out, 0), hdrR = h.Header(BlkRequestType.In, 0), hdrF = h.Header(BlkRequestType.Flush, 0);
        ulong d = h.Memory.Allocate(4096, 4096), s = h.Alloc(1);
        var worker = h.Blk.Workers(h.Device)[0];
        void Round()
        {
            h.Run(new DriverBuffer(hdrW, 16, false), new DriverBuffer(d, 4096, false), new DriverBuffer(s, 1, true));
            h.Run(new DriverBuffer(hdrR, 16, false), new DriverBuffer(d, 4096, true), new DriverBuffer(s, 1, true));
            h.Run(new DriverBuffer(hdrF, 16, false), new DriverBuffer(s, 1, true));
        }
        for (int i = 0; i < 50; i++) Round();
        log.Sync();
        log.ForgetSeen();
        long before = worker.ServiceAllocatedBytes;
        for (int i = 0; i < 500; i++) Round();
        Assert.Equal(0, h.Span(s, 1)[0]);
        Assert.Equal(0, worker.ServiceAllocatedBytes - before);
        // the requests were logged: the read buffer, the status byte and the used ring
        h.Fe.GetVringBase(0);
        log.Sync();
        Assert.True(log.IsSeen(d >> 12) && log.IsSeen(s >> 12) && log.IsSeen(h.Setup[0].UsedGpa >> 12));
    }

    /// <summary>The I/O pool's hand-off and back with the migration's log on allocates nothing either.</summary>
    [Fact]
    public void IoPoolAllocatesNothingWhileLogging()
    {
        using var h = new BlkHarness(storage: new GatedDisk(4 << 20), extraProtocolFeatures: LogShmfd);
        using var log = new MigrationLog(h.Memory);
        log.StartLogging(h.Fe, h.Setup);
        var worker = h.Blk.Workers(h.Device)[0];
        ulong rh = h.Header(BlkRequestType.In, 8), rd = h.Memory.Allocate(4096, 4096), rs = h.Alloc(1);
        void Round()
        {
            h.Run(new DriverBuffer(rh, 16, false), new DriverBuffer(rd, 4096, true), new DriverBuffer(rs, 1, true));
            Assert.Equal(0, h.Span(rs, 1)[0]);
        }
        for (int i = 0; i < 20; i++) Round();
        long before = worker.ServiceAllocatedBytes;
        for (int i = 0; i < 200; i++) Round();
        Assert.Equal(0, worker.ServiceAllocatedBytes - before);
        Assert.Equal(0, worker.InFlight);
        h.Fe.GetVringBase(0);
        log.Sync();
        Assert.True(log.IsSeen(rd >> 12) && log.IsSeen(rs >> 12));
    }
}
