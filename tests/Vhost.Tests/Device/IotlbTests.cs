using System.Buffers.Binary;
using Vhost.Device;
using Vhost.Interop;
using Vhost.Memory;
using Vhost.Protocol;
using Vhost.Rings;
using Vhost.Testing.BackEnd;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;

namespace Vhost.Tests.Device;

/// <summary>
/// A device behind a vIOMMU (VIRTIO_F_ACCESS_PLATFORM), driven by the C# front-end as QEMU drives it: ring and
/// buffer addresses are IOVAs, the back-end asks for what it lacks on the backend channel, and updates and
/// invalidations (each acknowledged) change what it may touch.
/// </summary>
public sealed class IotlbTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(10);
    private const ulong GuestBase = 0x10_0000;
    // the IOVA of guest-physical a is a + IovaShift: the two spaces differ, so a back-end that skipped the IOTLB fails
    private const ulong IovaShift = 0x40_0000_0000;

    private sealed class Harness : IDisposable
    {
        public readonly TestBackEnd Be;
        public readonly TestFrontEnd Fe;
        public readonly DeviceSetup Setup;
        public readonly UnixSocket Channel;
        private readonly DescriptorChain[] _chains = new DescriptorChain[4];
        private readonly BufferSegment[] _segs = new BufferSegment[16];
        private readonly List<byte> _pending = [];

        public Harness(bool packed = false, bool answerRingMisses = true, int capacity = IoTlb.DefaultCapacity, TimeSpan? missTimeout = null)
        {
            Be = new TestBackEnd(extraFeatures: VirtioFeature.Bit(VirtioFeature.AccessPlatform), iotlbCapacity: capacity, iotlbMissTimeout: missTimeout);
            Fe = Be.Connect();
            Setup = new DeviceSetup(Fe, new DeviceSetupOptions
            {
                Packed = packed,
                QueueSize = 64,
                MemorySize = 1 << 20,
                GuestBase = GuestBase,
                Features = new DeviceSetupOptions().Features | VirtioFeature.Bit(VirtioFeature.AccessPlatform),
                ProtocolFeatures = DeviceSetupOptions.DefaultProtocolFeatures | DeviceSetupOptions.ProtocolBits(ProtocolFeature.BackendReq),
                RingAddress = gpa => gpa + IovaShift,
            });
            Setup.Negotiate();
            Channel = Fe.OpenBackendChannel(needReply: true);
            Setup.SendMemTable();
            Setup.SetUpQueue(0);
            Setup.SetUpQueue(1);
            Setup.EnableQueues();
            if (answerRingMisses) AnswerMisses(6);
        }

        public FrontEndMemory Memory => Setup.Memory;

        public VhostDevice Dev => Be.Ops.LastNew!;

        public Virtqueue Q0 => Dev.Queue(0);

        public static ulong Iova(ulong gpa) => gpa + IovaShift;

        public ulong Update(ulong gpa, ulong size, byte perm = IotlbPayload.PermReadWrite) =>
            Fe.SendIotlb(new IotlbPayload(Iova(gpa), size, Memory.Uva(gpa), perm, IotlbPayload.TypeUpdate));

        public ulong Invalidate(ulong iova, ulong size) =>
            Fe.SendIotlb(new IotlbPayload(iova, size, 0, 0, IotlbPayload.TypeInvalidate));

        /// <summary>The next miss the back-end sent (iova, perm), or null if none came in time.</summary>
        public (ulong Iova, byte Perm)? NextMiss(TimeSpan? timeout = null)
        {
            var end = DateTime.UtcNow + (timeout ?? T);
            var buf = new byte[256];
            while (true)
            {
                if (_pending.Count >= MessageHeader.Length)
                {
                    var h = MessageHeader.Read(_pending.ToArray());
                    int total = MessageHeader.Length + (int)h.Size;
                    if (_pending.Count >= total)
                    {
                        var m = _pending.GetRange(0, total).ToArray();
                        _pending.RemoveRange(0, total);
                        Assert.Equal((uint)VhostUserBackendRequest.IotlbMsg, h.Request);
                        Assert.Equal(32u, h.Size);
                        Assert.Equal(1, m[MessageHeader.Length + 25]); // VHOST_IOTLB_MISS
                        return (BinaryPrimitives.ReadUInt64LittleEndian(m.AsSpan(MessageHeader.Length)), m[MessageHeader.Length + 24]);
                    }
                }
                int left = (int)(end - DateTime.UtcNow).TotalMilliseconds;
                if (left <= 0 || !Channel.WaitReadable(left)) return null;
                int n = Channel.TryReceive(buf, [], out _);
                if (n <= 0) return null;
                _pending.AddRange(buf.AsSpan(0, n).ToArray());
            }
        }

        /// <summary>Posts a writable 64-byte buffer on a page nobody mapped, looks once (nothing is popped) and checks the
        /// miss came; returns the page's guest-physical address.</summary>
        public ulong PostUnmappedBuffer(DriverRing ring)
        {
            ulong buf = Memory.Allocate(4096, 4096);
            ring.Add(new DriverBuffer(Iova(buf), 64, true));
            Assert.Empty(Pop().Chains);
            Assert.NotNull(NextMiss());
            return buf;
        }

        /// <summary>Answers <paramref name="count"/> misses with page updates, as QEMU does.</summary>
        public void AnswerMisses(int count)
        {
            for (int i = 0; i < count; i++)
            {
                var m = NextMiss() ?? throw new Xunit.Sdk.XunitException($"miss {i + 1} of {count} never came");
                ulong page = (m.Iova - IovaShift) & ~0xfffUL;
                Assert.Equal(0UL, Update(page, 4096));
            }
        }

        public bool NoMoreMisses() => NextMiss(TimeSpan.FromMilliseconds(200)) == null;

        public VirtqueueBurst Burst(Virtqueue q)
        {
            var end = DateTime.UtcNow + T;
            VirtqueueBurst burst;
            while (!q.TryBeginBurst(out burst))
            {
                if (DateTime.UtcNow > end) throw new Xunit.Sdk.XunitException($"no lease on queue {q.Index}");
                Thread.Yield();
            }
            return burst;
        }

        /// <summary>One burst's Pop on queue 0: the chains and their segments.</summary>
        public (DescriptorChain[] Chains, BufferSegment[] Segs) Pop()
        {
            using var b = Burst(Q0);
            int n = b.Pop(_chains, _segs);
            var chains = _chains.AsSpan(0, n).ToArray();
            int segs = n == 0 ? 0 : chains[^1].SegmentStart + chains[^1].SegmentCount;
            var s = _segs.AsSpan(0, segs).ToArray();
            foreach (var c in chains) b.PushUsed(c, 0);
            b.FlushUsed();
            return (chains, s);
        }

        public void Dispose()
        {
            Channel.Dispose();
            Setup.Dispose();
            Fe.Dispose();
            Be.Dispose();
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void RingsAreIovasAndWaitForTheirEntriesThenBuffersMissAndAreServedAfterTheUpdate(bool packed)
    {
        using var h = new Harness(packed);
        h.Be.Ops.WaitFor("new");
        Assert.NotNull(h.Dev.Iotlb);
        Assert.True(h.Dev.Iotlb!.Count >= 3);
        var ring = DriverRing.Create(h.Setup[0], h.Memory);
        ulong buf = h.Memory.Allocate(8192, 4096);
        h.Memory.Span(buf + 100, 4).Fill(0xab);
        // the driver posts IOVAs; the back-end has no entry for them yet
        ring.Add(new DriverBuffer(Harness.Iova(buf + 100), 200, false));
        Assert.Empty(h.Pop().Chains);
        var miss = h.NextMiss();
        Assert.Equal(Harness.Iova(buf + 100), miss!.Value.Iova);
        Assert.Equal(IotlbPayload.PermRead, miss.Value.Perm);
        Assert.True(h.Q0.AwaitingIotlb);
        // the chain stayed in the ring; a second look does not ask again while the first miss is pending
        Assert.Empty(h.Pop().Chains);
        Assert.True(h.NoMoreMisses());
        Assert.Equal(0UL, h.Update(buf, 4096, IotlbPayload.PermRead));
        Assert.False(h.Q0.AwaitingIotlb);
        var (chains, segs) = h.Pop();
        Assert.Single(chains);
        Assert.Equal(200u, chains[0].ReadableBytes);
        Assert.Equal(buf + 100, segs[0].GuestAddress);
        Assert.Equal(0xab, segs[0].Window.AsSpan()[0]);
        Assert.True(ring.TryGetUsed(out _));
        Assert.True(h.Q0.IotlbHits > 0);
        Assert.True(h.Q0.IotlbMisses >= 2);
        Assert.Equal(0, h.Q0.BadChains);
    }

    private sealed class CountingHandler : Vhost.Runtime.IQueueHandler
    {
        public readonly SemaphoreSlim Served = new(0);

        public bool Serve(VhostDevice device, int queue)
        {
            Served.Release();
            return false;
        }
    }

    [Fact]
    public void AnUpdateAfterAMissGivesTheServedQueuesATurnEvenWhenAnotherQueueMissed()
    {
        // net serves its receive queue from the transmit queue's handler: the receive queue's miss must wake that one
        using var h = new Harness();
        h.Be.Ops.WaitFor("new");
        var handler = new CountingHandler();
        // the kicks of the set-up (an unparked ring is kicked) would give turns of their own
        EventFd.TryConsume(h.Dev.Queue(1).KickFd!);
        h.Dev.Serve(1, handler, Vhost.Runtime.QueueMode.Event);
        Assert.True(handler.Served.Wait(T));
        // an update while no queue waits gives no turn
        Assert.Equal(0UL, h.Update(h.Memory.Allocate(4096, 4096), 4096));
        Assert.False(handler.Served.Wait(200));
        var ring = DriverRing.Create(h.Setup[0], h.Memory);
        ulong buf = h.PostUnmappedBuffer(ring);
        Assert.True(h.Q0.AwaitingIotlb);
        Assert.False(handler.Served.Wait(0));
        // the update the miss asked for gives queue 1's handler a turn, though nothing kicked queue 1
        Assert.Equal(0UL, h.Update(buf, 4096));
        Assert.True(handler.Served.Wait(T));
        Assert.Single(h.Pop().Chains);
    }

    [Fact]
    public void TheMeterShowsEachQueuesLookupsAndTheDevicesMessages()
    {
        using var h = new Harness();
        h.Be.Ops.WaitFor("new");
        var ring = DriverRing.Create(h.Setup[0], h.Memory);
        ulong buf = h.PostUnmappedBuffer(ring);
        Assert.Equal(0UL, h.Update(buf, 4096));
        Assert.Single(h.Pop().Chains);
        Assert.Equal(0UL, h.Invalidate(Harness.Iova(buf), 4096));
        Assert.NotEqual(0UL, h.Update(buf, 0));
        var seen = new Dictionary<(string, int), long>();
        int id = h.Dev.Id;
        using var listener = new System.Diagnostics.Metrics.MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter == IotlbMetrics.Meter) l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            int device = -1, queue = -1;
            foreach (var t in tags)
            {
                if (t.Key == "device") device = (int)t.Value!;
                else if (t.Key == "queue") queue = (int)t.Value!;
            }
            if (device == id) seen[(instrument.Name, queue)] = value;
        });
        listener.Start();
        listener.RecordObservableInstruments();
        Assert.Equal(h.Q0.IotlbHits, seen[("vhost.iotlb.hits", 0)]);
        Assert.Equal(h.Q0.IotlbMisses, seen[("vhost.iotlb.misses", 0)]);
        Assert.True(seen[("vhost.iotlb.hits", 0)] > 0);
        Assert.True(seen[("vhost.iotlb.misses", 0)] > 0);
        Assert.Equal(h.Dev.Iotlb!.Updates, seen[("vhost.iotlb.updates", -1)]);
        Assert.True(seen[("vhost.iotlb.updates", -1)] >= 7);
        Assert.Equal(1, seen[("vhost.iotlb.invalidations", -1)]);
        Assert.Equal(1, seen[("vhost.iotlb.refused", -1)]);
        Assert.Equal(0, seen[("vhost.iotlb.evictions", -1)]);
    }

    [Fact]
    public void AChainWhoseMissIsNeverAnsweredIsReturnedUnusedAfterTheTimeout()
    {
        using var h = new Harness(missTimeout: TimeSpan.Zero);
        h.Be.Ops.WaitFor("new");
        var ring = DriverRing.Create(h.Setup[0], h.Memory);
        ulong buf = h.PostUnmappedBuffer(ring);
        Assert.Equal(0, h.Q0.BadChains);
        // the next look finds the miss older than the timeout: the chain goes back to the guest with nothing written
        Assert.Empty(h.Pop().Chains);
        Assert.Equal(1, h.Q0.BadChains);
        Assert.Contains("no IOTLB update within 0 ms", h.Q0.LastBadChainReason, StringComparison.Ordinal);
        Assert.True(ring.TryGetUsed(out var u));
        Assert.Equal(0u, u.Length);
        Assert.True(h.Dev.IsRunning);
        Assert.Equal(0, h.Dev.Iotlb!.PendingMisses);
    }

    [Fact]
    public void ABufferAcrossTwoPagesIsOneSegmentWhenTheyFollowEachOtherAndTwoWhenNot()
    {
        using var h = new Harness();
        h.Be.Ops.WaitFor("new");
        var ring = DriverRing.Create(h.Setup[0], h.Memory);
        ulong a = h.Memory.Allocate(3 * 4096, 4096);
        Assert.Equal(0UL, h.Update(a, 4096));
        Assert.Equal(0UL, h.Update(a + 4096, 4096));
        ring.Add(new DriverBuffer(Harness.Iova(a + 4000), 200, true));
        var (chains, segs) = h.Pop();
        Assert.Single(chains);
        Assert.Single(segs);
        Assert.Equal(200u, chains[0].WritableBytes);
        // IOVA page a+2 mapped to the front-end page of a (a guest that aliases pages): two pieces, each right
        Assert.Equal(0UL, h.Fe.SendIotlb(new IotlbPayload(Harness.Iova(a + 2 * 4096), 4096, h.Memory.Uva(a), IotlbPayload.PermReadWrite, IotlbPayload.TypeUpdate)));
        ring.Add(new DriverBuffer(Harness.Iova(a + 4096 + 4000), 200, true));
        (chains, segs) = h.Pop();
        Assert.Single(chains);
        Assert.Equal(2, segs.Length);
        Assert.Equal(a + 4096 + 4000, segs[0].GuestAddress);
        Assert.Equal((nuint)96, segs[0].Window.Length);
        Assert.Equal(a, segs[1].GuestAddress);
        Assert.Equal((nuint)104, segs[1].Window.Length);
    }

    private ref struct ByteFiller(byte value, int size) : IBufferFiller
    {
        public readonly int Needed(int index) => size;

        public readonly void Fill(int index, Span<byte> buffer) => buffer.Fill(value);
    }

    private ref struct SummingTaker : IBufferTaker
    {
        public int Bytes;

        public bool Take(int index, ReadOnlySpan<byte> buffer)
        {
            Bytes += buffer.Length;
            return true;
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TheFastPathsTranslateIovasAndLeaveMissesAndPermissionsToTheGeneralPath(bool packed)
    {
        using var h = new Harness(packed);
        h.Be.Ops.WaitFor("new");
        var ring = DriverRing.Create(h.Setup[0], h.Memory);
        ulong a = h.Memory.Allocate(4096, 4096);
        Assert.Equal(0UL, h.Update(a, 4096));
        ring.Add(new DriverBuffer(Harness.Iova(a), 64, true));
        ring.Add(new DriverBuffer(Harness.Iova(a + 64), 64, true));
        long hits = h.Q0.IotlbHits;
        var filler = new ByteFiller(0x5a, 64);
        using (var b = h.Burst(h.Q0)) Assert.Equal(2, b.Fill(ref filler, 4));
        Assert.Equal(hits + 2, h.Q0.IotlbHits);
        // the bytes land at the guest-physical address behind the IOVA
        Assert.All(h.Memory.Span(a, 128).ToArray(), x => Assert.Equal(0x5a, x));
        Assert.True(ring.TryGetUsed(out var u1) && u1.Length == 64);
        Assert.True(ring.TryGetUsed(out var u2) && u2.Length == 64);

        // a buffer on a page without an entry: Fill stops before it and the general path asks for the page
        ulong unmapped = h.Memory.Allocate(4096, 4096);
        ring.Add(new DriverBuffer(Harness.Iova(unmapped), 64, true));
        using (var b = h.Burst(h.Q0)) Assert.Equal(0, b.Fill(ref filler, 1));
        Assert.Empty(h.Pop().Chains);
        Assert.NotNull(h.NextMiss());
        Assert.Equal(0UL, h.Update(unmapped, 4096));
        using (var b = h.Burst(h.Q0)) Assert.Equal(1, b.Fill(ref filler, 1));
        Assert.Equal(0x5a, h.Memory.Span(unmapped, 1)[0]);
        Assert.True(ring.TryGetUsed(out _));

        // a read-only entry: Fill writes nothing and the general path fails the chain
        ulong ro = h.Memory.Allocate(4096, 4096);
        Assert.Equal(0UL, h.Update(ro, 4096, IotlbPayload.PermRead));
        ring.Add(new DriverBuffer(Harness.Iova(ro), 64, true));
        using (var b = h.Burst(h.Q0)) Assert.Equal(0, b.Fill(ref filler, 1));
        Assert.Equal(0, h.Memory.Span(ro, 1)[0]);
        Assert.Empty(h.Pop().Chains);
        Assert.Equal(1, h.Q0.BadChains);
        Assert.True(ring.TryGetUsed(out _));

        // Take reads through the IOVA too
        ring.Add(new DriverBuffer(Harness.Iova(a + 256), 100, false));
        var taker = new SummingTaker();
        using (var b = h.Burst(h.Q0)) Assert.Equal(1, b.Take(ref taker, 4));
        Assert.Equal(100, taker.Bytes);
        Assert.True(ring.TryGetUsed(out _));
        Assert.True(h.Dev.IsRunning);
    }

    [Fact]
    public void AReadOnlyEntryIsNeverWrittenThrough()
    {
        using var h = new Harness();
        h.Be.Ops.WaitFor("new");
        var ring = DriverRing.Create(h.Setup[0], h.Memory);
        ulong a = h.Memory.Allocate(4096, 4096);
        Assert.Equal(0UL, h.Update(a, 4096, IotlbPayload.PermRead));
        ring.Add(new DriverBuffer(Harness.Iova(a), 64, true));
        Assert.Empty(h.Pop().Chains);
        Assert.Equal(1, h.Q0.BadChains);
        Assert.Contains("without write permission", h.Q0.LastBadChainReason, StringComparison.Ordinal);
        Assert.True(ring.TryGetUsed(out var u));
        Assert.Equal(0u, u.Length);
        Assert.True(h.Dev.IsRunning);
    }

    [Fact]
    public async Task AnInvalidationWaitsForTheBurstInFlightAndTheNextBurstMisses()
    {
        using var h = new Harness();
        h.Be.Ops.WaitFor("new");
        var ring = DriverRing.Create(h.Setup[0], h.Memory);
        ulong a = h.Memory.Allocate(4096, 4096);
        Assert.Equal(0UL, h.Update(a, 4096));
        ring.Add(new DriverBuffer(Harness.Iova(a), 64, true));
        using var burstTaken = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var segsSeen = new List<BufferSegment>();
        var worker = Task.Run(() =>
        {
            var chains = new DescriptorChain[1];
            var segs = new BufferSegment[4];
            using var b = h.Burst(h.Q0);
            Assert.Equal(1, b.Pop(chains, segs));
            segsSeen.Add(segs[0]);
            burstTaken.Set();
            release.Wait(T);
            // still inside the burst the invalidation waits for: the translation may be used until here
            segs[0].Window.AsSpan().Fill(1);
            b.PushUsed(chains[0], 64);
            b.FlushUsed();
        });
        Assert.True(burstTaken.Wait(T));
        h.Fe.Send(VhostUserRequest.IotlbMsg, VhostUserPayload.Iotlb(new IotlbPayload(Harness.Iova(a), 4096, 0, 0, IotlbPayload.TypeInvalidate)), needReply: true);
        // no acknowledgement while the burst holds the translation
        Assert.True(h.Fe.IsSilent(TimeSpan.FromMilliseconds(300)));
        release.Set();
        Assert.Equal(0UL, h.Fe.ReadAck(VhostUserRequest.IotlbMsg));
        await worker.WaitAsync(T);
        Assert.True(ring.TryGetUsed(out var u));
        Assert.Equal(64u, u.Length);
        // the entry is gone: the same IOVA misses
        ring.Add(new DriverBuffer(Harness.Iova(a), 64, true));
        Assert.Empty(h.Pop().Chains);
        Assert.Equal(Harness.Iova(a), h.NextMiss()!.Value.Iova);
    }

    [Fact]
    public async Task InvalidationsRacingBurstsNeverLetABurstUseARemovedEntry()
    {
        using var h = new Harness();
        h.Be.Ops.WaitFor("new");
        var ring = DriverRing.Create(h.Setup[0], h.Memory);
        ulong a = h.Memory.Allocate(4096, 4096);
        ulong b2 = h.Memory.Allocate(4096, 4096);
        // IOVA page X flips between two front-end pages; a burst must see the one mapped at its time, never the old
        ulong x = Harness.Iova(h.Memory.Allocate(4096, 4096));
        h.Memory.Span(a, 4096).Fill(0xaa);
        h.Memory.Span(b2, 4096).Fill(0xbb);
        int generation = 0; // even: a mapped, odd: b2 mapped; written only by the updater, read under the lease
        Assert.Equal(0UL, h.Fe.SendIotlb(new IotlbPayload(x, 4096, h.Memory.Uva(a), IotlbPayload.PermRead, IotlbPayload.TypeUpdate)));
        using var stop = new CancellationTokenSource();
        long wrong = 0, seen = 0;
        var poller = Task.Run(() =>
        {
            var chains = new DescriptorChain[1];
            var segs = new BufferSegment[4];
            while (!stop.IsCancellationRequested)
            {
                if (!h.Q0.TryBeginBurst(out var b)) continue;
                using (b)
                {
                    int g = Volatile.Read(ref generation);
                    if (b.Pop(chains, segs) == 1)
                    {
                        byte want = (g & 1) == 0 ? (byte)0xaa : (byte)0xbb;
                        if (segs[0].Window.AsSpan()[0] != want || Volatile.Read(ref generation) != g) Interlocked.Increment(ref wrong);
                        Interlocked.Increment(ref seen);
                        b.PushUsed(chains[0], 0);
                        b.FlushUsed();
                    }
                }
            }
        });
        var driver = Task.Run(() =>
        {
            int outstanding = 0;
            while (!stop.IsCancellationRequested)
            {
                while (ring.TryGetUsed(out _)) outstanding--;
                if (outstanding < 16)
                {
                    ring.Add(new DriverBuffer(x, 16, false));
                    outstanding++;
                }
                Thread.Yield();
            }
        });
        // the first buffer through tells that both threads run
        var start = DateTime.UtcNow + T;
        while (Interlocked.Read(ref seen) == 0) { Assert.True(DateTime.UtcNow < start, "nothing popped"); Thread.Yield(); }
        long seenBefore = Interlocked.Read(ref seen);
        for (int i = 0; i < 300 || Interlocked.Read(ref seen) < seenBefore + 200; i++)
        {
            Assert.True(i < 1_000_000, "bursts stopped popping");
            Assert.Equal(0UL, h.Invalidate(x, 4096));
            // between the two messages nothing is mapped: generation moves while no burst can hold a translation
            Interlocked.Increment(ref generation);
            Assert.Equal(0UL, h.Fe.SendIotlb(new IotlbPayload(x, 4096, h.Memory.Uva((i & 1) == 0 ? b2 : a), IotlbPayload.PermRead, IotlbPayload.TypeUpdate)));
        }
        stop.Cancel();
        await poller.WaitAsync(T);
        await driver.WaitAsync(T);
        Assert.Equal(0, Interlocked.Read(ref wrong));
        Assert.True(Interlocked.Read(ref seen) > 0);
    }

    [Fact]
    public void QemusFlushAllEndingAt2To64RemovesEveryEntryAboveItsStart()
    {
        using var h = new Harness();
        h.Be.Ops.WaitFor("new");
        ulong a = h.Memory.Allocate(4096, 4096);
        var tlb = h.Dev.Iotlb!;
        // one entry below the flush's start, and one in the last page of the IOVA space
        Assert.Equal(0UL, h.Fe.SendIotlb(new IotlbPayload(0x1000, 4096, h.Memory.Uva(a), IotlbPayload.PermRead, IotlbPayload.TypeUpdate)));
        Assert.Equal(0UL, h.Fe.SendIotlb(new IotlbPayload(0xffff_ffff_ffff_f000, 4096, h.Memory.Uva(a), IotlbPayload.PermRead, IotlbPayload.TypeUpdate)));
        int before = tlb.Count;
        // the rings' entries lie at IovaShift and up, above 0xfef00000 too
        Assert.Equal(0UL, h.Invalidate(0xfef0_0000, 0xffff_ffff_0110_0000));
        Assert.Equal(1, tlb.Count);
        Assert.True(before >= 5);
        // the rings rest; the next look asks for them again, and they run once answered
        Assert.True(h.Q0.RingsAwaitIotlb);
        Assert.False(h.Q0.TryBeginBurst(out _));
        h.AnswerMisses(6);
        Assert.False(h.Q0.RingsAwaitIotlb);
        var ring = DriverRing.Create(h.Setup[0], h.Memory);
        Assert.Equal(0UL, h.Update(a, 4096));
        ring.Add(new DriverBuffer(Harness.Iova(a), 8, false));
        Assert.Single(h.Pop().Chains);
        Assert.True(h.Dev.IsRunning);
    }

    [Fact]
    public void RingsInvalidatedWhileRunningKeepTheirIndexesAndGoOnWhereTheyWere()
    {
        using var h = new Harness(packed: true);
        h.Be.Ops.WaitFor("new");
        var ring = DriverRing.Create(h.Setup[0], h.Memory);
        ulong a = h.Memory.Allocate(4096, 4096);
        Assert.Equal(0UL, h.Update(a, 4096));
        for (int i = 0; i < 3; i++)
        {
            ring.Add(new DriverBuffer(Harness.Iova(a), 8, false));
            Assert.Single(h.Pop().Chains);
            Assert.True(ring.TryGetUsed(out _));
        }
        Assert.Equal(0UL, h.Invalidate(Harness.Iova(h.Setup[0].DescGpa), 4096));
        Assert.True(h.Q0.RingsAwaitIotlb);
        ring.Add(new DriverBuffer(Harness.Iova(a), 8, false));
        Assert.False(h.Q0.TryBeginBurst(out _));
        h.AnswerMisses(1);
        Assert.Single(h.Pop().Chains);
        Assert.True(ring.TryGetUsed(out _));
        Assert.Equal(4, h.Q0.LastAvailIndex);
        Assert.Equal(0, h.Q0.BadChains);
    }

    public static TheoryData<string, ulong, ulong, long, byte, byte> Hostile()
    {
        return new()
        {
            { "size 0", GuestBase, 0, 0, IotlbPayload.PermRead, IotlbPayload.TypeUpdate },
            { "iova range passing 2^64", ulong.MaxValue - 100, 4096, 0, IotlbPayload.PermRead, IotlbPayload.TypeUpdate },
            { "uaddr range passing 2^64", GuestBase, 4096, long.MinValue, IotlbPayload.PermRead, IotlbPayload.TypeUpdate },
            { "uaddr outside every region", GuestBase, 4096, 1L << 40, IotlbPayload.PermRead, IotlbPayload.TypeUpdate },
            { "uaddr running past guest memory", GuestBase, 2 << 20, 0, IotlbPayload.PermRead, IotlbPayload.TypeUpdate },
            { "perm 0", GuestBase, 4096, 0, IotlbPayload.PermNone, IotlbPayload.TypeUpdate },
            { "perm with unknown bits", GuestBase, 4096, 0, 7, IotlbPayload.TypeUpdate },
            { "a miss from the front-end", GuestBase, 4096, 0, IotlbPayload.PermRead, IotlbPayload.TypeMiss },
            { "access fail from the front-end", GuestBase, 4096, 0, IotlbPayload.PermRead, IotlbPayload.TypeAccessFail },
            { "type 9", GuestBase, 4096, 0, IotlbPayload.PermRead, 9 },
            { "invalidation of size 0", GuestBase, 0, 0, 0, IotlbPayload.TypeInvalidate },
        };
    }

    [Theory]
    [MemberData(nameof(Hostile))]
    public void HostileIotlbMessagesAreRefusedAndChangeNothing(string what, ulong iova, ulong size, long uaddrDelta, byte perm, byte type)
    {
        using var h = new Harness();
        h.Be.Ops.WaitFor("new");
        var tlb = h.Dev.Iotlb!;
        int before = tlb.Count;
        // uaddrDelta: relative to the start of guest memory's front-end range (long.MinValue: the top of the space)
        ulong uaddr = uaddrDelta == long.MinValue ? ulong.MaxValue - 10 : h.Memory.Uva(GuestBase) + (ulong)uaddrDelta;
        ulong ack = h.Fe.SendIotlb(new IotlbPayload(iova, size, uaddr, perm, type));
        Assert.True(ack != 0, what);
        Assert.Equal(before, tlb.Count);
        Assert.Equal(1, h.Dev.IotlbRefused);
        Assert.True(h.Dev.IsRunning, what);
        Assert.Contains(h.Be.Logs.Lines, l => l.Text.Contains("IOTLB", StringComparison.Ordinal));
    }

    [Fact]
    public void IotlbMessagesWithoutTheFeatureAreRefused()
    {
        using var be = new TestBackEnd(extraFeatures: VirtioFeature.Bit(VirtioFeature.AccessPlatform));
        using var fe = be.Connect();
        using var setup = DeviceSetup.Run(fe, new DeviceSetupOptions { QueueSize = 64, MemorySize = 1 << 20 });
        be.Ops.WaitFor("new");
        Assert.NotEqual(0UL, fe.SendIotlb(new IotlbPayload(0x1000, 4096, setup.Memory.Uva(GuestBase), 1, IotlbPayload.TypeUpdate)));
        Assert.Null(be.Ops.LastNew!.Iotlb);
        Assert.Equal(1, be.Ops.LastNew!.IotlbRefused);
        Assert.True(be.Ops.LastNew!.IsRunning);
    }

    [Fact]
    public void AFloodOfUpdatesIsBoundedByTheCapacityOldestFirst()
    {
        using var h = new Harness(capacity: 64);
        h.Be.Ops.WaitFor("new");
        var tlb = h.Dev.Iotlb!;
        ulong a = h.Memory.Allocate(4096, 4096);
        for (ulong i = 0; i < 500; i++)
            Assert.Equal(0UL, h.Fe.SendIotlb(new IotlbPayload(0x1_0000_0000 + (i << 12), 4096, h.Memory.Uva(a), IotlbPayload.PermRead, IotlbPayload.TypeUpdate)));
        Assert.Equal(64, tlb.Count);
        Assert.True(tlb.Evictions >= 500 - 64);
        // the newest are kept: the last one translates, the first does not
        Assert.Equal(1UL, tlb.Translate(0x1_0000_0000 + (499UL << 12), 1, IotlbAccess.Read, out _, out _, out _));
        Assert.Equal(0UL, tlb.Translate(0x1_0000_0000, 1, IotlbAccess.Read, out _, out _, out _));
        Assert.True(h.Dev.IsRunning);
    }
}

/// <summary>The IOTLB cache alone: lookups, merging, replacement and range ends at 2^64.</summary>
public sealed class IoTlbCacheTests
{
    [Fact]
    public void LookupsMergeFollowingEntriesAndStopAtGapsAndPermissions()
    {
        var t = new IoTlb();
        t.Insert(0x1000, 0x1000, 0x7000_1000, IotlbAccess.ReadWrite);
        t.Insert(0x2000, 0x1000, 0x7000_2000, IotlbAccess.ReadWrite);
        t.Insert(0x3000, 0x1000, 0x9000_0000, IotlbAccess.ReadWrite);
        t.Insert(0x4000, 0x1000, 0x9000_1000, IotlbAccess.Read);
        Assert.Equal(0x2000UL, t.Translate(0x1000, 0x2000, IotlbAccess.Write, out ulong u, out _, out _));
        Assert.Equal(0x7000_1000UL, u);
        Assert.Equal(0x1100UL, t.Translate(0x1f00, 0x1200, IotlbAccess.Write, out u, out ulong missAt, out _));
        Assert.Equal(0x3000UL, missAt);
        Assert.Equal(0x1000UL, t.Translate(0x3000, 0x2000, IotlbAccess.Write, out _, out missAt, out _));
        Assert.Equal(0x4000UL, missAt);
        Assert.Equal(0UL, t.Translate(0x4000, 1, IotlbAccess.Write, out _, out _, out bool denied));
        Assert.True(denied);
        Assert.Equal(0UL, t.Translate(0x5000, 1, IotlbAccess.Read, out _, out _, out denied));
        Assert.False(denied);
    }

    [Fact]
    public void AnUpdateReplacesWhatItOverlapsAndTheLastPageOfTheSpaceWorks()
    {
        var t = new IoTlb();
        t.Insert(0x1000, 0x3000, 0x5000_0000, IotlbAccess.Read);
        t.Insert(0x2000, 0x1000, 0x6000_0000, IotlbAccess.ReadWrite);
        Assert.Equal(1, t.Count);
        Assert.Equal(0UL, t.Translate(0x1000, 1, IotlbAccess.Read, out _, out _, out _));
        t.Insert(ulong.MaxValue - 0xfff, 0x1000, 0x8000_0000, IotlbAccess.Read);
        Assert.Equal(0x1000UL, t.Translate(ulong.MaxValue - 0xfff, 0x1000, IotlbAccess.Read, out ulong u, out _, out _));
        Assert.Equal(0x8000_0000UL, u);
        Assert.Equal(1UL, t.Translate(ulong.MaxValue, 1, IotlbAccess.Read, out _, out _, out _));
        Assert.Equal(2, t.Invalidate(0, ulong.MaxValue));
        Assert.Equal(0, t.Count);
        Assert.Null(IoTlb.ValidateUpdate(ulong.MaxValue - 0xfff, 0x1000, 0x1000, IotlbAccess.Read));
        Assert.NotNull(IoTlb.ValidateUpdate(ulong.MaxValue - 0xfff, 0x1001, 0x1000, IotlbAccess.Read));
    }

    [Fact]
    public void AMissIsAskedOncePerPageUntilItsRetryTime()
    {
        var t = new IoTlb();
        Assert.True(t.NoteMiss(0x1234, IotlbAccess.Read, 0));
        Assert.False(t.NoteMiss(0x1fff, IotlbAccess.Read, 10));
        Assert.True(t.NoteMiss(0x1000, IotlbAccess.Write, 10));
        Assert.True(t.NoteMiss(0x1000, IotlbAccess.Read, IoTlb.MissRetryMilliseconds));
        Assert.Equal(0L, t.PendingSince(0x1000, IotlbAccess.Read));
        t.Insert(0x1000, 0x1000, 0x5000, IotlbAccess.Read);
        Assert.Equal(0, t.PendingMisses);
    }
}
