using Vhost.Device;
using Vhost.Interop;
using Vhost.Protocol;
using Vhost.Rings;
using Vhost.Testing.BackEnd;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;

namespace Vhost.Tests.Rings;

/// <summary>
/// Packed-ring in-flight tracking when the back-end dies inside a used batch: between writing the area's new
/// used index and publishing the ring flags (the batch must be rolled back and its request run again), or
/// after publishing and before committing (the batch counts; only the others are resubmitted). The test is
/// the application of two core back-ends in turn and plays the crash by putting back the area fields the
/// dead back-end would not have reached.
/// </summary>
public sealed class PackedInflightRecoveryTests
{
    private const ushort QSize = 8;
    private const ulong Inflight = 1UL << (int)ProtocolFeature.InflightShmfd;
    private static readonly TimeSpan T = TimeSpan.FromSeconds(10);

    private static readonly DeviceSetupOptions Options = new()
    {
        Packed = true,
        QueueCount = 1,
        QueueSize = QSize,
        ProtocolFeatures = DeviceSetupOptions.DefaultProtocolFeatures | Inflight,
    };

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void CrashInsideAUsedBatch(bool published)
    {
        using var a = new FirstBackEnd();
        var (memory, q, vqA, ring, w) = (a.Memory, a.Queue, a.Vq, a.Ring, a.Area.Window);

        var (r0, r1, r2) = a.AddThreeRequests();
        var chains = new DescriptorChain[8];
        var segs = new BufferSegment[32];
        byte[] before;
        ushort slot0Flags = q.Desc.Ref<ushort>(14);
        using (vqA.AccessLock.EnterScope())
        {
            Assert.Equal(3, vqA.Pop(chains, segs));
            before = w.AsSpan().ToArray();
            vqA.PushUsed(chains[1], 8);
            vqA.FlushUsed();
        }
        // what the dead back-end had not written yet: the commit (old_*) and the inflight flags
        foreach (int off in new[] { 14, 15, 18, 19, 21 }) w.Ref<byte>((nuint)off) = before[off];
        for (int e = 0; e < QSize; e++) w.Ref<byte>((nuint)(32 + 32 * e)) = before[32 + 32 * e];
        Assert.NotEqual(w.Ref<ushort>(16), w.Ref<ushort>(18));
        if (!published) q.Desc.Ref<ushort>(14) = slot0Flags;   // died before the flags: the driver saw nothing
        else Assert.Equal(new UsedElement(r1, 8), ring.WaitUsed(T));
        a.Die();

        using var b = new SecondBackEnd(a);
        var (second, vqB) = (b.BackEnd, b.Vq);
        ushort[] expected = published ? [r0, r2] : [r0, r1, r2];
        Assert.Equal(expected.Length, vqB.InflightResubmitted);
        using (vqB.AccessLock.EnterScope())
        {
            Assert.Equal(expected.Length, vqB.Pop(chains, segs));
            for (int i = 0; i < expected.Length; i++)
            {
                Assert.Equal(expected[i], chains[i].Id);
                // the buffers come back from the copies kept in the area, indirect table included
                (uint rd, uint wr) = expected[i] == r0 ? (16u, 64u) : expected[i] == r1 ? (32u, 8u) : (24u, 40u);
                Assert.Equal(rd, chains[i].ReadableBytes);
                Assert.Equal(wr, chains[i].WritableBytes);
                vqB.PushUsed(chains[i], wr);
            }
            vqB.FlushUsed();
        }
        foreach (var id in expected) Assert.Equal(id, ring.WaitUsed(T).Id);

        // the rings continue where the driver is, and tracking costs no allocation
        a.AssertNextRequestServed(vqB);
        ulong b1 = memory.Allocate(16, 16), b2 = memory.Allocate(16, 16);
        void Round()
        {
            ring.Add(new DriverBuffer(b1, 16, false), new DriverBuffer(b2, 16, true));
            using (vqB.AccessLock.EnterScope())
            {
                vqB.Pop(chains, segs);
                vqB.PushUsed(chains[0], 16);
                vqB.FlushUsed();
            }
            ring.WaitUsed(T);
        }
        for (int i = 0; i < 20; i++) Round();
        long bytes = 0;
        for (int i = 0; i < 50; i++)
        {
            // only the back-end's part is measured: the test driver allocates
            ring.Add(new DriverBuffer(b1, 16, false), new DriverBuffer(b2, 16, true));
            long at = GC.GetAllocatedBytesForCurrentThread();
            using (vqB.AccessLock.EnterScope())
            {
                vqB.Pop(chains, segs);
                vqB.PushUsed(chains[0], 16);
                vqB.FlushUsed();
            }
            bytes += GC.GetAllocatedBytesForCurrentThread() - at;
            ring.WaitUsed(T);
        }
        Assert.Equal(0, bytes);
        Assert.True(vqB.InflightTracking);
        for (int e = 0; e < QSize; e++) Assert.Equal(0, w.Ref<byte>((nuint)(32 + 32 * e)));
        Assert.Empty(second.Logs.Errors);
    }

    /// <summary>
    /// A front-end can write anything into the area. Records that do not describe a chain (a buffer id beyond
    /// the ring; a chain running into another chain's entries) are refused with one error line and not
    /// resubmitted; the ring positions then come from the valid records only, so the requests behind the
    /// refused records, still available in the ring, are popped from there.
    /// </summary>
    [Fact]
    public void ForgedRecordsAreRefusedAndTheRingStillServes()
    {
        using var a = new FirstBackEnd();
        var (memory, q, vqA, ring, w) = (a.Memory, a.Queue, a.Vq, a.Ring, a.Area.Window);
        var (r0, r1, r2) = a.AddThreeRequests();   // area entries 0-1, 2, 3-4
        var chains = new DescriptorChain[8];
        var segs = new BufferSegment[32];
        using (vqA.AccessLock.EnterScope()) Assert.Equal(3, vqA.Pop(chains, segs));
        a.Die();

        Assert.Equal(1, w.Ref<byte>(32 + 32 * 2));
        w.Ref<ushort>(32 + 32 * 2 + 16) = 200;          // r1: buffer id 200 in a ring of 8
        w.Ref<ushort>(32 + 32 * 3 + 6) = 3;             // r2: three entries, the third one r0's
        w.Ref<ushort>(32 + 32 * 4 + 2) = 0;
        w.Ref<ushort>(32 + 32 * 3 + 4) = 0;

        using var b = new SecondBackEnd(a);
        var (second, vqB) = (b.BackEnd, b.Vq);
        Assert.Equal(1, vqB.InflightResubmitted);
        Assert.True(second.Logs.WaitForError("2 in-flight record(s) in the area do not describe a chain"));
        using (vqB.AccessLock.EnterScope())
        {
            Assert.Equal(3, vqB.Pop(chains, segs));
            Assert.Equal([r0, r1, r2], chains.Take(3).Select(c => c.Id).ToArray());
            for (int i = 0; i < 3; i++) vqB.PushUsed(chains[i], chains[i].WritableBytes);
            vqB.FlushUsed();
        }
        foreach (var id in new[] { r0, r1, r2 }) Assert.Equal(id, ring.WaitUsed(T).Id);
        a.AssertNextRequestServed(vqB);
        Assert.Single(second.Logs.Errors);
        Assert.Null(second.Ops.LastNew!.FaultReason);
    }

    /// <summary>The next back-end, given the dead one's area, rings and eventfds.</summary>
    private sealed class SecondBackEnd : IDisposable
    {
        private readonly TestFrontEnd _fe;
        private readonly DeviceSetup _setup;

        public SecondBackEnd(FirstBackEnd a)
        {
            _fe = BackEnd.Connect();
            _setup = new DeviceSetup(_fe, Options, a.Memory);
            _setup.Negotiate();
            _setup.SendMemTable();
            // a front-end that lost its back-end cannot ask where a packed ring stopped: it sends the last start's base
            InflightRestart.Resume(_fe, a.Info, a.Fd, a.Queue, 0x8000);
            BackEnd.Ops.WaitFor("new");
            Vq = BackEnd.Ops.LastNew!.Queue(0);
        }

        public TestBackEnd BackEnd { get; } = new(maxQueues: 1, extraProtocolFeatures: Inflight);

        public Virtqueue Vq { get; }

        public void Dispose()
        {
            _setup.Dispose();
            _fe.Dispose();
            BackEnd.Dispose();
        }
    }

    /// <summary>The back-end that dies: the core alone, the test its application, the area shared at start.</summary>
    private sealed class FirstBackEnd : IDisposable
    {
        private readonly TestBackEnd _be = new(maxQueues: 1, extraProtocolFeatures: Inflight);
        private readonly TestFrontEnd _fe;
        private readonly DeviceSetup _setup;

        public FirstBackEnd()
        {
            _fe = _be.Connect();
            _setup = new DeviceSetup(_fe, Options, Memory);
            _setup.Negotiate();
            _setup.SendMemTable();
            (Info, Fd) = InflightRestart.ShareArea(_fe, 1, QSize);
            Area = MemoryMapping.Map(Fd, (nuint)Info.MmapSize);
            Queue = _setup.SetUpQueue(0);
            _setup.EnableQueues();
            _be.Ops.WaitFor("new");
            Vq = _be.Ops.LastNew!.Queue(0);
            Ring = new DriverPackedRing(Queue, Memory);
        }

        public FrontEndMemory Memory { get; } = FrontEndMemory.Create(4 << 20, 0x10_0000);

        public InflightPayload Info { get; }

        public SafeFd Fd { get; }

        public MemoryMapping Area { get; }

        public QueueSetup Queue { get; }

        public Virtqueue Vq { get; }

        public DriverPackedRing Ring { get; }

        public DriverBuffer Buf(uint len, bool writable) => new(Memory.Allocate(len, 16), len, writable);

        /// <summary>A new request is popped by <paramref name="vq"/> (found where the driver put it) and comes back.</summary>
        public void AssertNextRequestServed(Virtqueue vq)
        {
            ushort next = Ring.Add(Buf(16, false), Buf(16, true));
            var chains = new DescriptorChain[2];
            using (vq.AccessLock.EnterScope())
            {
                Assert.Equal(1, vq.Pop(chains, new BufferSegment[8]));
                Assert.Equal(next, chains[0].Id);
                vq.PushUsed(chains[0], 16);
                vq.FlushUsed();
            }
            Assert.Equal(next, Ring.WaitUsed(T).Id);
        }

        /// <summary>Three requests of 2, 1 (indirect) and 2 slots: their buffer ids.</summary>
        public (ushort, ushort, ushort) AddThreeRequests()
        {
            return (Ring.Add(Buf(16, false), Buf(64, true)), Ring.AddIndirect(Buf(32, false), Buf(8, true)), Ring.Add(Buf(24, false), Buf(40, true)));
        }

        /// <summary>The connection goes; nothing more is written to the area or the rings.</summary>
        public void Die()
        {
            _fe.Dispose();
            var end = DateTime.UtcNow + T;
            while (_be.Socket.Devices.Count > 0 && DateTime.UtcNow < end) Thread.Sleep(5);
        }

        public void Dispose()
        {
            _fe.Dispose();
            _setup.Dispose();
            _be.Dispose();
            Area.Dispose();
            Fd.Dispose();
            Memory.Dispose();
        }
    }
}
