using System.Buffers.Binary;
using Vhost.Device;
using Vhost.Net;
using Vhost.Protocol;
using Vhost.Testing.BackEnd;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;

namespace Vhost.Net.Tests;

/// <summary>The net data path over a device brought up by the test front-end (real socket, memfd memory).</summary>
public sealed class NetDataPathTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(5);

    private sealed class Net : IDisposable
    {
        public readonly TestBackEnd Be;
        public readonly TestFrontEnd Fe;
        public readonly DeviceSetup Setup;
        public readonly VhostDevice Dev;
        public readonly DriverRing Rx, Tx;

        public Net(bool packed = false, bool mrg = true, ulong dropFeatures = 0)
        {
            Be = new TestBackEnd(extraFeatures: NetFeatures.Default);
            Fe = Be.Connect();
            ulong want = ~(VirtioFeature.Bit(VirtioFeature.LogAll) | VirtioFeature.Bit(VirtioFeature.AccessPlatform) | VirtioFeature.Bit(VirtioFeature.RingPacked) | dropFeatures);
            if (!mrg) want &= ~(1UL << NetFeatures.MrgRxbuf);
            Setup = DeviceSetup.Run(Fe, new DeviceSetupOptions { Packed = packed, QueueSize = 256, MemorySize = 32 << 20, Features = want });
            Be.Ops.WaitFor("new");
            Dev = Be.Ops.LastNew!;
            Rx = DriverRing.Create(Setup[0], Setup.Memory);
            Tx = DriverRing.Create(Setup[1], Setup.Memory);
            if (Tx is DriverPackedRing ptx) ptx.InOrder = Dev.HasFeature(VirtioFeature.InOrder);
        }

        /// <summary>The guest sends a frame: header then data in one readable buffer.</summary>
        public ulong Send(ReadOnlySpan<byte> header, ReadOnlySpan<byte> frame)
        {
            ulong gpa = Setup.Memory.Allocate((ulong)(header.Length + frame.Length), 16);
            header.CopyTo(Setup.Memory.Span(gpa, header.Length));
            frame.CopyTo(Setup.Memory.Span(gpa + (ulong)header.Length, frame.Length));
            Tx.Add(new DriverBuffer(gpa, (uint)(header.Length + frame.Length), false));
            return gpa;
        }

        public void Dispose()
        {
            Setup.Dispose();
            Fe.Dispose();
            Be.Dispose();
        }
    }

    private static byte[] Frame(int size, byte fill = 0x11)
    {
        var f = new byte[size];
        f.AsSpan().Fill(fill);
        f[0] = 0x02; // unicast destination
        return f;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void DequeueDeliversFramesAndCountsSizes(bool packed)
    {
        using var n = new Net(packed);
        using var pool = new PacketPool(64);
        var hdr = new byte[12];
        n.Send(hdr, Frame(60));
        n.Send(hdr, Frame(1000));
        var bcast = Frame(64);
        bcast.AsSpan(0, 6).Fill(0xff);
        n.Send(hdr, bcast);
        var pkts = new Packet[8];
        int got = VirtioNet.DequeueBurst(n.Dev, 1, pool, pkts);
        Assert.Equal(3, got);
        Assert.Equal([60, 1000, 64], pkts[..3].Select(p => p.Length));
        var st = VirtioNet.Stats(n.Dev, 1);
        Assert.Equal(3, st.Packets);
        Assert.Equal(1124, st.Bytes);
        Assert.Equal(1, st.Broadcast);
        Assert.Equal(2, st.SizeBins[0]);
        Assert.Equal(1, st.SizeBins[4]);
        for (int i = 0; i < 3; i++) Assert.Equal(new UsedElement((ushort)i, 0), n.Tx.WaitUsed(T) with { Id = (ushort)i });
        pool.Free(pkts.AsSpan(0, got));
        Assert.Equal(pool.Count, pool.Available);
    }

    /// <summary>The receive fast path counts after the burst: sizes, multicast and broadcast as DPDK names them.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void EnqueueCountsWhatTheFastPathPlaced(bool packed)
    {
        using var n = new Net(packed);
        using var pool = new PacketPool(64);
        var mcast = Frame(100);
        mcast[0] = 0x01;
        var bcast = Frame(64);
        bcast.AsSpan(0, 6).Fill(0xff);
        // a group address one bit short of broadcast, with a source of all ones: multicast, not broadcast
        var nearly = Frame(200);
        nearly.AsSpan(0, 12).Fill(0xff);
        nearly[5] = 0xfe;
        var frames = new[] { Frame(60), Frame(64), mcast, bcast, Frame(1000), nearly };
        foreach (var _ in frames) n.Rx.Add(new DriverBuffer(n.Setup.Memory.Allocate(2048, 64), 2048, true));
        var pkts = new Packet[frames.Length];
        for (int i = 0; i < pkts.Length; i++) Assert.True(pool.TryCreate(frames[i], out pkts[i]));
        Assert.Equal(frames.Length, VirtioNet.EnqueueBurst(n.Dev, 0, pkts));
        var st = VirtioNet.Stats(n.Dev, 0);
        Assert.Equal(6, st.Packets);
        Assert.Equal(60 + 64 + 100 + 64 + 1000 + 200, st.Bytes);
        Assert.Equal(2, st.Multicast);
        Assert.Equal(1, st.Broadcast);
        Assert.Equal([3, 1, 1, 0, 1, 0, 0], st.SizeBins);
        pool.Free(pkts);
    }

    /// <summary>
    /// A frame shorter than a MAC address has no destination to classify: its buffer's next bytes are whatever the
    /// buffer held before, here the tail of a broadcast address, and must not count it as broadcast or multicast.
    /// One guest buffer takes the fast path (CountBurst), a header-and-data chain the general one (Count).
    /// </summary>
    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void EnqueueDoesNotClassifyARuntByItsBuffersStaleBytes(bool packed, bool chainedGuestBuffer)
    {
        using var n = new Net(packed);
        using var pool = new PacketPool(1);
        var bcast = Frame(64);
        bcast.AsSpan(0, 6).Fill(0xff);
        Assert.True(pool.TryCreate(bcast, out var old));
        pool.Free(old);
        // the pool's only buffer again: four bytes rewritten, the fifth and sixth still ff
        Assert.True(pool.TryCreate([0xff, 0xff, 0xff, 0xff], out var runt));
        var mem = n.Setup.Memory;
        if (chainedGuestBuffer)
            n.Rx.Add(new DriverBuffer(mem.Allocate(12, 16), 12, true), new DriverBuffer(mem.Allocate(2048, 64), 2048, true));
        else
            n.Rx.Add(new DriverBuffer(mem.Allocate(2048, 64), 2048, true));
        Assert.Equal(1, VirtioNet.EnqueueBurst(n.Dev, 0, [runt]));
        Assert.Equal(16u, n.Rx.WaitUsed(T).Length);
        var st = VirtioNet.Stats(n.Dev, 0);
        Assert.Equal((1L, 4L, 0L, 0L), (st.Packets, st.Bytes, st.Multicast, st.Broadcast));
        pool.Free(runt);
    }

    [Fact]
    public void LyingHeadersAreDroppedAndCounted()
    {
        using var n = new Net(dropFeatures: 1UL << NetFeatures.HostUfo);
        using var pool = new PacketPool(64);
        var frame = Frame(100);
        var csumOutside = new byte[12];
        csumOutside[0] = 1;                                           // NEEDS_CSUM
        BinaryPrimitives.WriteUInt16LittleEndian(csumOutside.AsSpan(6), 90);
        BinaryPrimitives.WriteUInt16LittleEndian(csumOutside.AsSpan(8), 20); // 90+20+2 > 100
        var gsoNotNegotiated = new byte[12];
        gsoNotNegotiated[0] = 1;
        gsoNotNegotiated[1] = 3;                                      // UDP, HOST_UFO not acked
        BinaryPrimitives.WriteUInt16LittleEndian(gsoNotNegotiated.AsSpan(4), 1400);
        var gsoSizeZero = new byte[12];
        gsoSizeZero[0] = 1;
        gsoSizeZero[1] = 1;                                           // TCPv4 with gso_size 0
        var unknownGso = new byte[12];
        unknownGso[0] = 1;
        unknownGso[1] = 7;
        foreach (var h in new[] { csumOutside, gsoNotNegotiated, gsoSizeZero, unknownGso }) n.Send(h, frame);
        n.Send(new byte[12], frame);                                  // an honest one after them
        var pkts = new Packet[8];
        Assert.Equal(1, VirtioNet.DequeueBurst(n.Dev, 1, pool, pkts));
        var st = VirtioNet.Stats(n.Dev, 1);
        Assert.Equal(4, st.BadHeaders);
        Assert.Equal(1, st.Packets);
        Assert.True(n.Be.Logs.WaitForError("header lies"));
        pool.Free(pkts[0]);
        Assert.True(n.Dev.IsRunning);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void OffloadRequestsCrossFromTransmitHeaderToReceiveHeader(bool packed)
    {
        // a TSOv4 frame asking for its checksum: the metadata survives dequeue, and enqueue (the one-buffer fast
        // path) writes it into the receive header with num_buffers 1
        using var n = new Net(packed);
        using var pool = new PacketPool(64);
        var tx = new byte[12];
        tx[0] = 1;                                                    // NEEDS_CSUM
        tx[1] = 1;                                                    // GSO TCPv4
        BinaryPrimitives.WriteUInt16LittleEndian(tx.AsSpan(2), 54);   // hdr_len
        BinaryPrimitives.WriteUInt16LittleEndian(tx.AsSpan(4), 1448); // gso_size
        BinaryPrimitives.WriteUInt16LittleEndian(tx.AsSpan(6), 34);   // csum_start
        BinaryPrimitives.WriteUInt16LittleEndian(tx.AsSpan(8), 16);   // csum_offset
        var frame = Frame(1000);
        n.Send(tx, frame);
        var pkts = new Packet[4];
        Assert.Equal(1, VirtioNet.DequeueBurst(n.Dev, 1, pool, pkts));
        ref var m = ref pkts[0].Meta;
        Assert.Equal(PacketOffloads.NeedsCsum, m.Offloads);
        Assert.Equal((1, 1448, 54, 34, 16), ((int)m.GsoType, (int)m.GsoSize, (int)m.HeaderLength, (int)m.CsumStart, (int)m.CsumOffset));

        ulong rx = n.Setup.Memory.Allocate(2048, 16);
        n.Rx.Add(new DriverBuffer(rx, 2048, true));
        Assert.Equal(1, VirtioNet.EnqueueBurst(n.Dev, 0, pkts.AsSpan(0, 1)));
        Assert.Equal(1012u, n.Rx.WaitUsed(T).Length);
        var h = n.Setup.Memory.Span(rx, 12).ToArray();
        Assert.Equal(tx[..10], h[..10]);
        Assert.Equal(1, BinaryPrimitives.ReadUInt16LittleEndian(h.AsSpan(10)));
        Assert.Equal(frame, n.Setup.Memory.Span(rx + 12, 1000).ToArray());
        pool.Free(pkts[0]);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void PackedInOrderTransmitBatchReturnsAsOneUsedDescriptor(bool inOrder)
    {
        // with VIRTIO_F_IN_ORDER the device may return a batch with one descriptor carrying the last id (what
        // DPDK's vhost does and its virtio PMD expects); without it, every descriptor is written
        using var n = new Net(packed: true, dropFeatures: inOrder ? 0 : VirtioFeature.Bit(VirtioFeature.InOrder));
        Assert.Equal(inOrder, n.Dev.HasFeature(VirtioFeature.InOrder));
        using var pool = new PacketPool(64);
        var ids = new ushort[3];
        for (int i = 0; i < 3; i++)
        {
            ulong gpa = n.Setup.Memory.Allocate(76, 16);
            n.Setup.Memory.Span(gpa + 12, 1)[0] = 0x02;
            ids[i] = n.Tx.Add(new DriverBuffer(gpa, 76, false));
        }
        var pkts = new Packet[4];
        Assert.Equal(3, VirtioNet.DequeueBurst(n.Dev, 1, pool, pkts));
        pool.Free(pkts.AsSpan(0, 3));
        ushort Flags(int slot) => n.Setup[1].Desc.Ref<ushort>((nuint)(16 * slot + 14));
        ushort Id(int slot) => n.Setup[1].Desc.Ref<ushort>((nuint)(16 * slot + 12));
        const ushort usedBoth = (1 << 7) | (1 << 15);
        Assert.Equal(usedBoth, Flags(0) & usedBoth);
        Assert.Equal(inOrder ? ids[2] : ids[0], Id(0));
        // slots 1 and 2 still carry the driver's avail-only flags when the batch came back as one
        Assert.Equal(inOrder ? (ushort)(1 << 7) : usedBoth, Flags(1) & usedBoth);
        Assert.Equal(inOrder ? (ushort)(1 << 7) : usedBoth, Flags(2) & usedBoth);
    }

    /// <summary>
    /// A full burst taken from a packed in-order transmit ring is held (QueuePolicy.HoldTakenReturns); the next
    /// burst that finds the ring dry returns it, and so does the front-end disabling the ring.
    /// </summary>
    [Fact]
    public void HeldTransmitBuffersComeBackWhenTheRingRunsDryOrIsDisabled()
    {
        using var n = new Net(packed: true);
        Assert.True(n.Dev.HasFeature(VirtioFeature.InOrder));
        using var pool = new PacketPool(256);
        var pkts = new Packet[32];
        ushort Flags(int slot) => n.Setup[1].Desc.Ref<ushort>((nuint)(16 * slot + 14));
        ushort Id(int slot) => n.Setup[1].Desc.Ref<ushort>((nuint)(16 * slot + 12));
        const ushort usedBoth = (1 << 7) | (1 << 15);
        ushort last = 0;
        for (int i = 0; i < 32; i++) last = n.Tx.Add(new DriverBuffer(n.Setup.Memory.Allocate(76, 16), 76, false));
        Assert.Equal(32, VirtioNet.DequeueBurst(n.Dev, 1, pool, pkts));
        pool.Free(pkts);
        Assert.Equal(1 << 7, Flags(0) & usedBoth);
        Assert.Equal(0, VirtioNet.DequeueBurst(n.Dev, 1, pool, pkts));
        Assert.Equal(usedBoth, Flags(0) & usedBoth);
        Assert.Equal(last, Id(0));

        for (int i = 0; i < 32; i++) last = n.Tx.Add(new DriverBuffer(n.Setup.Memory.Allocate(76, 16), 76, false));
        Assert.Equal(32, VirtioNet.DequeueBurst(n.Dev, 1, pool, pkts));
        pool.Free(pkts);
        Assert.Equal(1 << 7, Flags(32) & usedBoth);
        Assert.NotNull(n.Fe.SetVringEnable(1, false, needReply: true));
        Assert.Equal(usedBoth, Flags(32) & usedBoth);
        Assert.Equal(last, Id(32));
    }

    /// <summary>
    /// A packed ring's transmit fast path takes plain one-buffer frames; a header asking for an offload and a
    /// chained frame hand over to the general path mid-burst; frames and used buffers keep the ring's order.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void PackedDequeueMixesFastAndGeneralPaths(bool inOrder)
    {
        using var n = new Net(packed: true, dropFeatures: inOrder ? 0 : VirtioFeature.Bit(VirtioFeature.InOrder));
        using var pool = new PacketPool(64);
        var plain = new byte[12];
        var csum = new byte[12];
        csum[0] = 1;                                                  // NEEDS_CSUM
        BinaryPrimitives.WriteUInt16LittleEndian(csum.AsSpan(6), 34);
        BinaryPrimitives.WriteUInt16LittleEndian(csum.AsSpan(8), 16);
        byte[][] frames = [Frame(64, 1), Frame(100, 2), Frame(70, 3), Frame(80, 4), Frame(90, 5)];
        var ids = new List<ushort> { n.Tx.Add(Buf(plain, frames[0])), n.Tx.Add(Buf(csum, frames[1])), n.Tx.Add(Buf(plain, frames[2])) };
        // header and frame in two descriptors
        ulong h = n.Setup.Memory.Allocate(12, 16), f = n.Setup.Memory.Allocate(80, 16);
        frames[3].CopyTo(n.Setup.Memory.Span(f, 80));
        ids.Add(n.Tx.Add(new DriverBuffer(h, 12, false), new DriverBuffer(f, 80, false)));
        ids.Add(n.Tx.Add(Buf(plain, frames[4])));
        var pkts = new Packet[8];
        Assert.Equal(5, VirtioNet.DequeueBurst(n.Dev, 1, pool, pkts));
        for (int i = 0; i < 5; i++)
        {
            var copy = new byte[frames[i].Length];
            Assert.Equal(copy.Length, pool.CopyOut(pkts[i], copy));
            Assert.Equal(frames[i], copy);
        }
        Assert.Equal(PacketOffloads.NeedsCsum, pkts[1].Meta.Offloads);
        Assert.Equal(PacketOffloads.None, pkts[0].Meta.Offloads);
        Assert.Equal(ids, Enumerable.Range(0, 5).Select(_ => n.Tx.WaitUsed(T).Id));
        Assert.False(n.Tx.TryGetUsed(out _));
        Assert.Equal(5, VirtioNet.Stats(n.Dev, 1).Packets);
        pool.Free(pkts.AsSpan(0, 5));
        Assert.Equal(pool.Count, pool.Available);

        DriverBuffer Buf(byte[] header, byte[] frame)
        {
            ulong gpa = n.Setup.Memory.Allocate((ulong)(12 + frame.Length), 16);
            header.CopyTo(n.Setup.Memory.Span(gpa, 12));
            frame.CopyTo(n.Setup.Memory.Span(gpa + 12, frame.Length));
            return new DriverBuffer(gpa, (uint)(12 + frame.Length), false);
        }
    }

    [Fact]
    public void MergeableEnqueueSpreadsAFrameOverSeveralBuffers()
    {
        using var n = new Net(packed: false, mrg: true);
        using var pool = new PacketPool(64);
        var bufs = new ulong[4];
        for (int i = 0; i < 4; i++)
        {
            bufs[i] = n.Setup.Memory.Allocate(1024, 16);
            n.Rx.Add(new DriverBuffer(bufs[i], 1024, true));
        }
        var frame = Frame(3000, 0x77);
        Assert.True(pool.TryCreate(frame, out var p));
        Assert.True(p.Meta.Next >= 0, "a 3000-byte frame should be chained over 2048-byte buffers");
        Assert.Equal(1, VirtioNet.EnqueueBurst(n.Dev, 0, [p]));
        var used = Enumerable.Range(0, 3).Select(_ => n.Rx.WaitUsed(T)).ToArray();
        Assert.Equal([1024u, 1024u, 3012u - 2048u], used.Select(u => u.Length));
        Assert.Equal(3, BinaryPrimitives.ReadUInt16LittleEndian(n.Setup.Memory.Span(bufs[0] + 10, 2)));
        var back = new byte[3012];
        for (int i = 0; i < 3; i++) n.Setup.Memory.Span(bufs[i], (int)used[i].Length).CopyTo(back.AsSpan(1024 * i));
        Assert.Equal(frame, back[12..]);
        Assert.False(n.Rx.TryGetUsed(out _));
        pool.Free(p);
    }

    /// <summary>
    /// A packed ring's fast path takes one-buffer frames into one-descriptor buffers; a chained frame or a
    /// chained buffer hands over to the general path mid-burst, and the used ring keeps the order.
    /// </summary>
    [Fact]
    public void PackedEnqueueMixesFastAndGeneralPaths()
    {
        using var n = new Net(packed: true, mrg: true);
        using var pool = new PacketPool(64);
        var bufs = new List<ulong>();
        ulong Buf(uint len)
        {
            ulong b = n.Setup.Memory.Allocate(len, 16);
            bufs.Add(b);
            return b;
        }
        ushort[] ids =
        [
            n.Rx.Add(new DriverBuffer(Buf(2048), 2048, true)),
            n.Rx.Add(new DriverBuffer(Buf(2048), 2048, true)),
            n.Rx.Add(new DriverBuffer(Buf(2048), 2048, true)),
            // a two-descriptor chain: the fast path must stop here
            n.Rx.Add(new DriverBuffer(Buf(16), 16, true), new DriverBuffer(Buf(2048), 2048, true)),
            n.Rx.Add(new DriverBuffer(Buf(2048), 2048, true)),
        ];
        byte[][] frames = [Frame(64, 1), Frame(3000, 2), Frame(100, 3), Frame(60, 4)];
        var pkts = frames.Select(f => { Assert.True(pool.TryCreate(f, out var p)); return p; }).ToArray();
        Assert.True(pkts[1].Meta.Next >= 0);
        Assert.Equal(4, VirtioNet.EnqueueBurst(n.Dev, 0, pkts));
        var used = Enumerable.Range(0, 5).Select(_ => n.Rx.WaitUsed(T)).ToArray();
        Assert.Equal(ids, used.Select(u => u.Id));
        Assert.Equal([76u, 2048u, 3012u - 2048u, 112u, 72u], used.Select(u => u.Length));
        Assert.Equal(frames[0], n.Setup.Memory.Span(bufs[0] + 12, 64).ToArray());
        Assert.Equal(2, BinaryPrimitives.ReadUInt16LittleEndian(n.Setup.Memory.Span(bufs[1] + 10, 2)));
        var big = n.Setup.Memory.Span(bufs[1] + 12, 2036).ToArray().Concat(n.Setup.Memory.Span(bufs[2], 3012 - 2048).ToArray());
        Assert.Equal(frames[1], big);
        // header in the 16-byte buffer, the frame after it in the chain's second buffer
        Assert.Equal(1, BinaryPrimitives.ReadUInt16LittleEndian(n.Setup.Memory.Span(bufs[3] + 10, 2)));
        Assert.Equal(frames[2], n.Setup.Memory.Span(bufs[3] + 12, 4).ToArray().Concat(n.Setup.Memory.Span(bufs[4], 96).ToArray()));
        Assert.Equal(frames[3], n.Setup.Memory.Span(bufs[5] + 12, 60).ToArray());
        Assert.False(n.Rx.TryGetUsed(out _));
        Assert.Equal(4, VirtioNet.Stats(n.Dev, 0).Packets);
        foreach (var p in pkts) pool.Free(p);
        Assert.Equal(pool.Count, pool.Available);
    }

    /// <summary>
    /// The receive header is written only where it differs from what the buffer already holds (so the driver's
    /// copy of a reused buffer's header line stays valid): whatever a buffer held before, stale bytes, an
    /// offload header from an earlier frame or the very header, a plain frame's header comes out all zero but
    /// num_buffers 1. With <paramref name="splitHeader"/> each buffer is a chain whose first descriptor ends
    /// inside the header, so the general path writes it in two pieces, each compared on its own.
    /// </summary>
    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void ReceiveHeaderIsRightWhateverTheBufferHeld(bool packed, bool splitHeader)
    {
        using var n = new Net(packed);
        using var pool = new PacketPool(64);
        var before = new byte[][]
        {
            Enumerable.Repeat((byte)0xaa, 12).ToArray(),
            [1, 1, 54, 0, 0xa8, 5, 34, 0, 16, 0, 1, 0],               // NEEDS_CSUM + TSOv4 from an earlier frame
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],                      // already right
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0],                      // num_buffers of a merged frame
            [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],                      // only the first piece differs
        };
        var bufs = before.Select(b =>
        {
            ulong gpa = n.Setup.Memory.Allocate(2048, 64);
            b.CopyTo(n.Setup.Memory.Span(gpa, 12));
            if (splitHeader) n.Rx.Add(new DriverBuffer(gpa, 8, true), new DriverBuffer(gpa + 8, 2040, true));
            else n.Rx.Add(new DriverBuffer(gpa, 2048, true));
            return gpa;
        }).ToArray();
        var pkts = new Packet[before.Length];
        for (int i = 0; i < pkts.Length; i++) Assert.True(pool.TryCreate(Frame(60, (byte)i), out pkts[i]));
        Assert.Equal(pkts.Length, VirtioNet.EnqueueBurst(n.Dev, 0, pkts));
        byte[] want = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        for (int i = 0; i < bufs.Length; i++)
        {
            Assert.Equal(72u, n.Rx.WaitUsed(T).Length);
            Assert.Equal(want, n.Setup.Memory.Span(bufs[i], 12).ToArray());
            Assert.Equal(Frame(60, (byte)i), n.Setup.Memory.Span(bufs[i] + 12, 60).ToArray());
        }
        pool.Free(pkts);
    }

    /// <summary>
    /// Rounds of six one-buffer frames around a packed ring, twice past its end: the fast path's
    /// four-descriptor lines and its singles alternate with the alignment, and every frame lands whole.
    /// </summary>
    [Fact]
    public void PackedEnqueueRoundsWrapTheRing()
    {
        using var n = new Net(packed: true, mrg: true);
        using var pool = new PacketPool(64);
        var bufs = new ulong[6];
        for (int i = 0; i < bufs.Length; i++) bufs[i] = n.Setup.Memory.Allocate(2048, 64);
        var pkts = new Packet[6];
        for (int round = 0; round < 100; round++)
        {
            var ids = new ushort[6];
            for (int i = 0; i < 6; i++) ids[i] = n.Rx.Add(new DriverBuffer(bufs[i], 2048, true));
            for (int i = 0; i < 6; i++) Assert.True(pool.TryCreate(Frame(60 + i, (byte)(round + i)), out pkts[i]));
            Assert.Equal(6, VirtioNet.EnqueueBurst(n.Dev, 0, pkts));
            for (int i = 0; i < 6; i++)
            {
                var u = n.Rx.WaitUsed(T);
                Assert.Equal(ids[i], u.Id);
                Assert.Equal((uint)(72 + i), u.Length);
                Assert.Equal(Frame(60 + i, (byte)(round + i)), n.Setup.Memory.Span(bufs[i] + 12, 60 + i).ToArray());
                Assert.Equal(1, BinaryPrimitives.ReadUInt16LittleEndian(n.Setup.Memory.Span(bufs[i] + 10, 2)));
            }
            Assert.False(n.Rx.TryGetUsed(out _));
            pool.Free(pkts);
        }
        Assert.Equal(600, VirtioNet.Stats(n.Dev, 0).Packets);
    }

    [Fact]
    public void NineThousandByteFrameGoesBothWays()
    {
        using var n = new Net(packed: true);
        using var pool = new PacketPool(64);
        var frame = Frame(9000, 0x3c);
        n.Send(new byte[12], frame);
        var pkts = new Packet[2];
        Assert.Equal(1, VirtioNet.DequeueBurst(n.Dev, 1, pool, pkts));
        var copy = new byte[9000];
        Assert.Equal(9000, pool.CopyOut(pkts[0], copy));
        Assert.Equal(frame, copy);
        ulong big = n.Setup.Memory.Allocate(9100, 16);
        n.Rx.Add(new DriverBuffer(big, 9100, true));
        Assert.Equal(1, VirtioNet.EnqueueBurst(n.Dev, 0, pkts.AsSpan(0, 1)));
        Assert.Equal(9012u, n.Rx.WaitUsed(T).Length);
        Assert.Equal(frame, n.Setup.Memory.Span(big + 12, 9000).ToArray());
        pool.Free(pkts[0]);
        Assert.Equal(pool.Count, pool.Available);
    }

    [Fact]
    public void NonMergeableBufferTooSmallDropsTheFrameNotTheBuffer()
    {
        using var n = new Net(mrg: false);
        using var pool = new PacketPool(64);
        ulong small = n.Setup.Memory.Allocate(200, 16);
        n.Rx.Add(new DriverBuffer(small, 200, true));
        Assert.True(pool.TryCreate(Frame(1000), out var big));
        Assert.True(pool.TryCreate(Frame(100), out var fits));
        Assert.Equal(2, VirtioNet.EnqueueBurst(n.Dev, 0, [big, fits]));
        Assert.Equal(1, VirtioNet.Stats(n.Dev, 0).Dropped);
        Assert.Equal(112u, n.Rx.WaitUsed(T).Length);
        pool.Free(big);
        pool.Free(fits);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void BurstLoopAllocatesNothing(bool packed)
    {
        using var n = new Net(packed);
        using var pool = new PacketPool(256);
        var hdr = new byte[12];
        var frame = Frame(64);
        ulong txBuf = n.Send(hdr, frame);
        ulong rxBuf = n.Setup.Memory.Allocate(2048, 16);
        var pkts = new Packet[32];
        var split = n.Tx;
        var rxRing = n.Rx;
        void Round()
        {
            int got = VirtioNet.DequeueBurst(n.Dev, 1, pool, pkts);
            Assert.Equal(1, got);
            Assert.True(split.TryGetUsed(out _));
            rxRing.Add(new DriverBuffer(rxBuf, 2048, true));
            Assert.Equal(1, VirtioNet.EnqueueBurst(n.Dev, 0, pkts.AsSpan(0, 1)));
            Assert.True(rxRing.TryGetUsed(out _));
            pool.Free(pkts[0]);
            split.Add(new DriverBuffer(txBuf, 76, false));
        }
        for (int i = 0; i < 1000; i++) Round();
        // the driver-side helpers allocate (they are test code); measure only the back-end's bursts
        long total = 0;
        for (int i = 0; i < 20_000; i++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            int got = VirtioNet.DequeueBurst(n.Dev, 1, pool, pkts);
            long mid = GC.GetAllocatedBytesForCurrentThread();
            total += mid - before;
            Assert.Equal(1, got);
            split.TryGetUsed(out _);
            rxRing.Add(new DriverBuffer(rxBuf, 2048, true));
            // xunit's Assert allocates a comparer per call, so results are checked outside the measured window
            before = GC.GetAllocatedBytesForCurrentThread();
            int sent = VirtioNet.EnqueueBurst(n.Dev, 0, pkts.AsSpan(0, 1));
            pool.Free(pkts[0]);
            total += GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.Equal(1, sent);
            rxRing.TryGetUsed(out _);
            split.Add(new DriverBuffer(txBuf, 76, false));
        }
        Assert.Equal(0, total);
    }

    [Theory]
    [InlineData(false, false, false)]
    [InlineData(true, false, false)]
    [InlineData(false, true, false)]
    [InlineData(true, true, true)]
    public void MultiDescriptorJumboFrameIsDequeued(bool packed, bool indirect, bool headerMarkedWritable)
    {
        // headerMarkedWritable: DPDK's virtio PMD leaves WRITE on the header entry of packed indirect tables
        // the shape virtio-user sends a 9000-byte multi-segment mbuf in: header alone, then the segments
        using var n = new Net(packed);
        using var pool = new PacketPool(64);
        var frame = Frame(9000, 0x5e);
        var bufs = new List<DriverBuffer>();
        ulong h = n.Setup.Memory.Allocate(12, 16);
        n.Setup.Memory.Span(h, 12).Clear();
        bufs.Add(new DriverBuffer(h, 12, headerMarkedWritable));
        int off = 0;
        foreach (int len in new[] { 2000, 2000, 2000, 2000, 1000 })
        {
            ulong g = n.Setup.Memory.Allocate((ulong)len, 16);
            frame.AsSpan(off, len).CopyTo(n.Setup.Memory.Span(g, len));
            bufs.Add(new DriverBuffer(g, (uint)len, false));
            off += len;
        }
        if (indirect) n.Tx.AddIndirect([.. bufs]);
        else n.Tx.Add([.. bufs]);
        var pkts = new Packet[4];
        int got = VirtioNet.DequeueBurst(n.Dev, 1, pool, pkts);
        var st = VirtioNet.Stats(n.Dev, 1);
        Assert.True(got == 1, $"dropped {st.Dropped} undersize {st.Undersize} bad headers {st.BadHeaders}, pool {pool.Available}/{pool.Count}");
        var copy = new byte[9000];
        Assert.Equal(9000, pool.CopyOut(pkts[0], copy));
        Assert.Equal(frame, copy);
        pool.Free(pkts[0]);
        Assert.Equal(pool.Count, pool.Available);
    }
}
