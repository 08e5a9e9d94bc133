using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using Vhost.Device;
using Vhost.Interop;
using Vhost.Protocol;
using Vhost.Rings;

namespace Vhost.Net;

/// <summary>
/// The virtio-net data path: rte_vhost_enqueue_burst and rte_vhost_dequeue_burst. Queue pair i is queue 2i
/// (the guest's receive queue: we enqueue into it) and 2i+1 (the guest's transmit queue: we dequeue from it).
/// One TryEnter of the queue's access lock per burst; nothing allocated per packet.
/// </summary>
public static class VirtioNet
{
    /// <summary>The most frames one burst moves.</summary>
    public const int MaxBurst = 64;
    private const int MaxSegments = 1024;
    private const byte GsoNone = 0, GsoTcp4 = 1, GsoUdp = 3, GsoTcp6 = 4, GsoEcn = 0x80;
    private const int EthHeader = 14;

    internal sealed class QueueState
    {
        public readonly DescriptorChain[] Chains = new DescriptorChain[MaxBurst];
        public readonly BufferSegment[] Segments = new BufferSegment[MaxSegments];
        public readonly NetQueueStats Stats = new();
        // the header length the transmit policy was set for; 0: not set yet
        public int TransmitPolicyHeader;
    }

    /// <summary>The virtio-net header length this device uses: 12 with VERSION_1 or MRG_RXBUF, else 10.</summary>
    public static int HeaderLength(VhostDevice device) =>
        device.HasFeature(VirtioFeature.Version1) || device.HasFeature(NetFeatures.MrgRxbuf) ? 12 : 10;

    /// <summary>
    /// What a transmit queue's fast path does with the lines of the frames it has copied out
    /// (<see cref="QueuePolicy.TakenLineEviction"/>), set on each queue when it is first served. Tuned by default: the
    /// lines leave our cache when that measures faster for the guest (the header line stays).
    /// </summary>
    public static LineEviction TransmitLineEviction { get; set; } = LineEviction.Tuned;

    /// <summary>Statistics of one queue (rte_vhost_vring_stats_get).</summary>
    public static NetQueueStats Stats(VhostDevice device, int queueId) => State(device, device.Queue(queueId)).Stats;

    private static readonly QueueLocal<QueueState> s_state = new();

    private static QueueState State(VhostDevice device, Virtqueue q) => s_state.Get(q) ?? CreateState(device, q);

    // apart from State so that its closure is made only when a queue gets its state
    private static QueueState CreateState(VhostDevice device, Virtqueue q) => s_state.GetOrAdd(q, queue =>
    {
        var s = new QueueState();
        s.Stats.Attach(device, queue);
        NetMetrics.Register(device, queue.Index, s.Stats);
        return s;
    });

    /// <summary>
    /// What the guest's transmit queues ask of the ring engine: we only read them, and DequeueBurst returns every
    /// chain it pops, in order, in the same flush; the header's line stays in the cache when the rest is evicted.
    /// </summary>
    private static QueuePolicy TransmitPolicy(int hdrLen) => new()
    {
        DeviceReadsOnly = true,
        BatchInOrderUsed = true,
        HoldTakenReturns = true,
        TakenLineEviction = TransmitLineEviction,
        TakenLineEvictionSkip = hdrLen,
    };

    /// <summary>
    /// Guest to host: fills <paramref name="packets"/> with frames the guest sent on <paramref name="queueId"/>
    /// (odd), buffers from <paramref name="pool"/>. Returns how many. Frames whose header lies are dropped
    /// and counted. The caller owns (and frees) the packets.
    /// </summary>
    public static int DequeueBurst(VhostDevice device, int queueId, PacketPool pool, Span<Packet> packets)
    {
        if (!device.IsRunning || (uint)queueId >= (uint)device.Queues.Count || (queueId & 1) == 0 || packets.IsEmpty) return 0;
        var q = device.Queue(queueId);
        if (!q.TryBeginBurst(out var burst)) return 0;
        try
        {
            if (!q.IsReady) return 0;
            var st = State(device, q);
            int produced = 0;
            if (device.RarpPending && TryMakeRarp(device, pool, out var rarp))
            {
                packets[produced++] = rarp;
                device.RarpPending = false;
                // once per migration: not a per-packet cost
                device.Logger.LogInformation("device {Id}: RARP sent for the migrated guest", device.Id);
            }
            int want = Math.Min(packets.Length - produced, MaxBurst);
            if (want == 0) return produced;
            int hdrLen = HeaderLength(device);
            // set under the lease, on the first burst and whenever the header length changed with the features
            if (st.TransmitPolicyHeader != hdrLen)
            {
                burst.Policy = TransmitPolicy(hdrLen);
                st.TransmitPolicyHeader = hdrLen;
            }
            // The fast path, and a second look when it came up short but the ring is not dry: often a whole
            // burst became visible just after Take looked (the driver publishes a burst at once); about one
            // burst in twelve went the general way before the second look. What the fast path declines goes to Pop.
            for (int look = 0; look < 2; look++)
            {
                var taker = new TxTaker(packets[produced..], pool, hdrLen);
                int took = burst.Take(ref taker, want);
                st.Stats.CountBurst(packets.Slice(produced, took));
                produced += took;
                want -= took;
                if (want == 0 || burst.NothingToPop) return produced;
            }
            int n = burst.Pop(st.Chains.AsSpan(0, want), st.Segments);
            if (n == 0) return produced;
            ulong features = device.Features;
            Span<byte> hdr = stackalloc byte[12];
            for (int i = 0; i < n; i++)
            {
                ref var c = ref st.Chains[i];
                burst.PushUsed(c, 0);
                var segs = new ReadOnlySpan<BufferSegment>(st.Segments, c.SegmentStart, c.ReadableSegments);
                int frameLen = (int)c.ReadableBytes - hdrLen;
                if (frameLen < EthHeader)
                {
                    st.Stats.Undersize++;
                    st.Stats.Dropped++;
                    continue;
                }
                PacketMeta meta = default;
                // nearly every frame: header and frame in one buffer, header asking for nothing (flags and gso
                // type zero), so there is nothing to gather or check
                bool plain = segs.Length == 1 && BinaryPrimitives.ReadUInt16LittleEndian(segs[0].Window.Span(0, 2)) == 0;
                if (!plain)
                {
                    Gather(segs, 0, hdr[..hdrLen]);
                    if (!CheckTxHeader(hdr, frameLen, features, out meta))
                    {
                        st.Stats.BadHeaders++;
                        st.Stats.Dropped++;
                        LogBadHeader(q, hdr);
                        continue;
                    }
                }
                if (!CopyIn(pool, segs, hdrLen, frameLen, out var p))
                {
                    st.Stats.Dropped++;
                    continue;
                }
                ref var m = ref p.Meta;
                m.Offloads = meta.Offloads;
                m.GsoType = meta.GsoType;
                m.GsoSize = meta.GsoSize;
                m.HeaderLength = meta.HeaderLength;
                m.CsumStart = meta.CsumStart;
                m.CsumOffset = meta.CsumOffset;
                st.Stats.Count(p.Pool.HeadOf(p.Index), frameLen);
                packets[produced++] = p;
            }
            burst.FlushUsed();
            return produced;
        }
        finally
        {
            burst.Dispose();
        }
    }

    /// <summary>
    /// Host to guest: copies <paramref name="packets"/> into the guest's receive queue <paramref name="queueId"/>
    /// (even). Returns how many were placed; the rest did not fit now (the caller decides to retry or drop).
    /// The caller still owns every packet. A frame larger than the guest's buffers is dropped and counted.
    /// </summary>
    public static int EnqueueBurst(VhostDevice device, int queueId, ReadOnlySpan<Packet> packets)
    {
        if (!device.IsRunning || (uint)queueId >= (uint)device.Queues.Count || (queueId & 1) != 0 || packets.IsEmpty) return 0;
        var q = device.Queue(queueId);
        if (!q.TryBeginBurst(out var burst)) return 0;
        try
        {
            if (!q.IsReady) return 0;
            var st = State(device, q);
            var chains = st.Chains;
            bool mrg = device.HasFeature(NetFeatures.MrgRxbuf);
            int hdrLen = HeaderLength(device);
            bool guestCsum = device.HasFeature(NetFeatures.GuestCsum);
            bool guestTso = device.HasFeature(NetFeatures.GuestTso4) || device.HasFeature(NetFeatures.GuestTso6);
            int have = 0, next = 0, segUsed = 0;
            long badBefore = q.BadChains;
            Span<byte> hdr = stackalloc byte[12];
            var filler = new RxFiller(packets, hdrLen, guestCsum, guestTso);
            int placed = burst.Fill(ref filler, packets.Length);
            if (placed < packets.Length && !burst.NothingToPop)
            {
                // as in DequeueBurst: buffers the driver posted just after Fill looked go the fast way too
                var again = new RxFiller(packets[placed..], hdrLen, guestCsum, guestTso);
                placed += burst.Fill(ref again, packets.Length - placed);
            }
            st.Stats.CountBurst(packets[..placed]);
            if (placed == packets.Length || burst.NothingToPop) return placed;
            for (; placed < packets.Length; placed++)
            {
                var p = packets[placed];
                int len = p.Length;
                int total = hdrLen + len;
                if (next == have && have < chains.Length)
                {
                    // every remaining frame needs at least one chain
                    PopMore(burst, st, Math.Min(chains.Length - have, packets.Length - placed), ref have, ref segUsed);
                }
                // gather enough chains: one without mergeable buffers, as many as it takes with them
                int k = next;
                long room = 0;
                while (room < total)
                {
                    if (k == have)
                    {
                        if (have == chains.Length) break;
                        // every remaining frame needs at least one chain; more are popped only when a frame needs them
                        int ask = Math.Max(1, Math.Min(chains.Length - have, packets.Length - placed - (have - k)));
                        if (PopMore(burst, st, ask, ref have, ref segUsed) == 0) break;
                    }
                    room += chains[k].WritableBytes;
                    k++;
                    if (!mrg) break;
                }
                if (room < total)
                {
                    if (!mrg && k > next)
                    {
                        // the guest's buffer cannot hold this frame: drop the frame, keep the buffer for the next
                        st.Stats.Dropped++;
                        continue;
                    }
                    break; // the ring is out of buffers: the rest waits for the caller's next try
                }
                int buffers = k - next;
                WriteRxHeader(hdr[..hdrLen], ref p.Meta, guestCsum, guestTso, hdrLen);
                if (hdrLen == 12) BinaryPrimitives.WriteUInt16LittleEndian(hdr[10..], (ushort)buffers);
                var w = new RxWriter(burst, chains, st.Segments, next, k);
                w.Write(hdr[..hdrLen], unlessEqual: true);
                for (int b = p.Index; b >= 0; b = p.Pool.MetaOf(b).Next)
                    w.Write(p.Pool.DataOf(b)[..p.Pool.MetaOf(b).DataLength]);
                w.Finish();
                st.Stats.Count(p.Pool.HeadOf(p.Index), len);
                next = k;
            }
            if (next < have)
            {
                // popped but unused: give them back, unless a bad chain was returned in between (then the
                // unused ones can no longer be rewound in order and go back empty)
                if (q.BadChains == badBefore) burst.Rewind(chains.AsSpan(next, have - next));
                else for (int j = next; j < have; j++) burst.PushUsed(chains[j], 0);
            }
            burst.FlushUsed();
            return placed;
        }
        finally
        {
            burst.Dispose();
        }
    }

    /// <summary>
    /// Frames for a ring's transmit fast path: header and frame in one guest buffer, the header asking for
    /// nothing, the frame fitting one pool buffer. Anything else is declined and goes the general way.
    /// </summary>
    private readonly ref struct TxTaker(Span<Packet> packets, PacketPool pool, int hdrLen) : IBufferTaker
    {
        private readonly Span<Packet> _packets = packets;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public bool Take(int index, ReadOnlySpan<byte> buffer)
        {
            int len = buffer.Length - hdrLen;
            if (len < EthHeader || len > pool.DataRoom || BinaryPrimitives.ReadUInt16LittleEndian(buffer) != 0) return false;
            if (!pool.TryAllocate(out var p)) return false;
            var data = pool.DataOf(p.Index);
            FrameCopy.Copy(buffer.Slice(hdrLen, len), data);
            ref var m = ref pool.MetaOf(p.Index);
            m.DataLength = len;
            m.PacketLength = len;
            _packets[index] = p;
            return true;
        }
    }

    /// <summary>One-buffer frames for a ring's fast path: header and frame into one guest buffer.</summary>
    private readonly ref struct RxFiller(ReadOnlySpan<Packet> packets, int hdrLen, bool guestCsum, bool guestTso) : IBufferFiller
    {
        private readonly ReadOnlySpan<Packet> _packets = packets;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public int Needed(int index)
        {
            ref readonly var p = ref _packets[index];
            // a chained frame takes the general path
            return p.Meta.Next < 0 ? hdrLen + p.Length : 0;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Fill(int index, Span<byte> buffer)
        {
            var p = _packets[index];
            int len = buffer.Length - hdrLen;
            var data = p.Pool.DataOf(p.Index);
            WriteRxHeader(buffer[..hdrLen], ref p.Meta, guestCsum, guestTso, hdrLen);
            FrameCopy.Copy(data[..len], buffer[hdrLen..]);
        }
    }

    /// <summary>Pops up to <paramref name="ask"/> more chains after the <paramref name="have"/> already held.</summary>
    private static int PopMore(VirtqueueBurst q, QueueState st, int ask, ref int have, ref int segUsed)
    {
        var chains = st.Chains;
        int got = q.Pop(chains.AsSpan(have, ask), st.Segments.AsSpan(segUsed));
        // Pop numbers segments from the start of the span it was given
        int baseSeg = segUsed;
        for (int j = have; j < have + got; j++)
        {
            chains[j].SegmentStart += baseSeg;
            segUsed = chains[j].SegmentStart + chains[j].SegmentCount;
        }
        have += got;
        return got;
    }

    /// <summary>The receive header for a packet's offload metadata; num_buffers (if present) is 1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WriteRxHeader(Span<byte> hdr, ref PacketMeta m, bool guestCsum, bool guestTso, int hdrLen)
    {
        // flags, gso type, hdr_len, gso_size, then csum fields and num_buffers = 1: two stores instead of a clear.
        // A receive buffer usually still holds this very header from its last round, and a store would take
        // the line away from the driver's core only for it to read the same bytes back (a cache miss per
        // frame in its receive path), so each word is written only when it differs, as DPDK does.
        // read through a ReadOnlySpan made once: each implicit conversion is a call the JIT may not inline once
        // the enqueue loop has used up its inlining budget, and a call there costs stack stores per frame
        ReadOnlySpan<byte> current = hdr;
        if (BinaryPrimitives.ReadUInt64LittleEndian(current) != 0) BinaryPrimitives.WriteUInt64LittleEndian(hdr, 0);
        if (hdrLen == 12)
        {
            if (BinaryPrimitives.ReadUInt32LittleEndian(current[8..]) != 1u << 16) BinaryPrimitives.WriteUInt32LittleEndian(hdr[8..], 1u << 16);
        }
        else if (BinaryPrimitives.ReadUInt16LittleEndian(current[8..]) != 0)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(hdr[8..], 0);
        }
        if (m.Offloads == PacketOffloads.None && m.GsoType == GsoNone) return;
        if (guestCsum && (m.Offloads & PacketOffloads.NeedsCsum) != 0)
        {
            hdr[0] = 1;
            BinaryPrimitives.WriteUInt16LittleEndian(hdr[6..], m.CsumStart);
            BinaryPrimitives.WriteUInt16LittleEndian(hdr[8..], m.CsumOffset);
        }
        else if (guestCsum && (m.Offloads & PacketOffloads.DataValid) != 0)
        {
            hdr[0] = 2;
        }
        if (guestTso && m.GsoType != GsoNone)
        {
            hdr[1] = m.GsoType;
            BinaryPrimitives.WriteUInt16LittleEndian(hdr[2..], m.HeaderLength);
            BinaryPrimitives.WriteUInt16LittleEndian(hdr[4..], m.GsoSize);
        }
    }

    /// <summary>Writes a frame across the writable segments of chains [first, end), one used element per chain.</summary>
    private ref struct RxWriter
    {
        private readonly VirtqueueBurst _q;
        private readonly DescriptorChain[] _chains;
        private readonly BufferSegment[] _segs;
        private readonly int _end;
        private int _chain, _seg, _segEnd, _off;
        private uint _written;

        public RxWriter(VirtqueueBurst q, DescriptorChain[] chains, BufferSegment[] segs, int first, int end)
        {
            _q = q;
            _chains = chains;
            _segs = segs;
            _end = end;
            _chain = first;
            Enter();
        }

        private void Enter()
        {
            ref var c = ref _chains[_chain];
            _seg = c.SegmentStart + c.ReadableSegments;
            _segEnd = c.SegmentStart + c.SegmentCount;
            _off = 0;
            _written = 0;
        }

        /// <summary>Appends <paramref name="src"/>; with <paramref name="unlessEqual"/> a piece the buffer already
        /// holds is left alone (the receive header: see <see cref="WriteRxHeader"/>).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Write(scoped ReadOnlySpan<byte> src, bool unlessEqual = false)
        {
            while (!src.IsEmpty)
            {
                while (_seg == _segEnd)
                {
                    _q.PushUsed(_chains[_chain], _written, _segs);
                    _chain++;
                    Enter();
                }
                var dst = _segs[_seg].Window;
                int take = Math.Min(src.Length, (int)dst.Length - _off);
                var to = dst.Span((nuint)_off, take);
                if (!unlessEqual || !src[..take].SequenceEqual(to)) src[..take].CopyTo(to);
                _off += take;
                _written += (uint)take;
                src = src[take..];
                if (_off == (int)dst.Length)
                {
                    _seg++;
                    _off = 0;
                }
            }
        }

        public void Finish()
        {
            while (_chain < _end)
            {
                _q.PushUsed(_chains[_chain], _written, _segs);
                if (++_chain < _end) Enter();
            }
        }
    }

    private static void Gather(ReadOnlySpan<BufferSegment> segs, int offset, Span<byte> dest)
    {
        int done = 0;
        foreach (ref readonly var s in segs)
        {
            int len = s.Length;
            if (offset >= len)
            {
                offset -= len;
                continue;
            }
            int take = Math.Min(len - offset, dest.Length - done);
            s.Window.Span((nuint)offset, take).CopyTo(dest[done..]);
            done += take;
            offset = 0;
            if (done == dest.Length) return;
        }
    }

    /// <summary>Copies [skip, skip+length) of the chain's readable bytes into pool buffers.</summary>
    private static bool CopyIn(PacketPool pool, ReadOnlySpan<BufferSegment> segs, int skip, int length, out Packet packet)
    {
        if (!pool.TryAllocate(out packet)) return false;
        int room = pool.DataRoom;
        // fast path: header and frame in one descriptor, frame fits one buffer (64-byte frames from virtio-user)
        if (segs.Length > 0 && segs[0].Length >= skip + length && length <= room)
        {
            FrameCopy.Copy(segs[0].Window.Span((nuint)skip, length), pool.DataOf(packet.Index));
            ref var m = ref pool.MetaOf(packet.Index);
            m.DataLength = length;
            m.PacketLength = length;
            return true;
        }
        int cur = packet.Index, filled = 0, remaining = length;
        foreach (ref readonly var s in segs)
        {
            int segLen = s.Length;
            if (skip >= segLen)
            {
                skip -= segLen;
                continue;
            }
            var src = s.Window.Span((nuint)skip, segLen - skip);
            skip = 0;
            while (!src.IsEmpty && remaining > 0)
            {
                if (filled == room)
                {
                    if (!pool.TryAllocate(out var more))
                    {
                        pool.Free(packet);
                        packet = default;
                        return false;
                    }
                    pool.MetaOf(cur).DataLength = filled;
                    pool.MetaOf(cur).Next = more.Index;
                    cur = more.Index;
                    filled = 0;
                }
                int take = Math.Min(Math.Min(src.Length, room - filled), remaining);
                src[..take].CopyTo(pool.DataOf(cur)[filled..]);
                filled += take;
                remaining -= take;
                src = src[take..];
            }
            if (remaining == 0) break;
        }
        pool.MetaOf(cur).DataLength = filled;
        pool.MetaOf(packet.Index).PacketLength = length;
        return true;
    }

    /// <summary>
    /// Checks a transmit header against the frame and the negotiated features; a header that asks for something
    /// never negotiated or points outside the frame is a lie.
    /// </summary>
    internal static bool CheckTxHeader(ReadOnlySpan<byte> h, int frameLen, ulong features, out PacketMeta meta)
    {
        meta = default;
        byte flags = h[0];
        byte gso = h[1];
        ushort hdrLen = BinaryPrimitives.ReadUInt16LittleEndian(h[2..]);
        ushort gsoSize = BinaryPrimitives.ReadUInt16LittleEndian(h[4..]);
        ushort csumStart = BinaryPrimitives.ReadUInt16LittleEndian(h[6..]);
        ushort csumOffset = BinaryPrimitives.ReadUInt16LittleEndian(h[8..]);
        if ((flags & 1) != 0)
        {
            if (!VirtioFeature.Has(features, NetFeatures.Csum)) return false;
            if (csumStart + csumOffset + 2 > frameLen) return false;
            meta.Offloads |= PacketOffloads.NeedsCsum;
            meta.CsumStart = csumStart;
            meta.CsumOffset = csumOffset;
        }
        if ((flags & 2) != 0) meta.Offloads |= PacketOffloads.DataValid;
        byte type = (byte)(gso & ~GsoEcn);
        if (type != GsoNone)
        {
            int needed = type switch { GsoTcp4 => NetFeatures.HostTso4, GsoTcp6 => NetFeatures.HostTso6, GsoUdp => NetFeatures.HostUfo, _ => -1 };
            if (needed < 0 || !VirtioFeature.Has(features, needed)) return false;
            if ((gso & GsoEcn) != 0 && !VirtioFeature.Has(features, NetFeatures.HostEcn)) return false;
            if (gsoSize == 0 || (flags & 1) == 0 || hdrLen > frameLen) return false;
            meta.GsoType = gso;
            meta.GsoSize = gsoSize;
            meta.HeaderLength = hdrLen;
        }
        else if ((gso & GsoEcn) != 0)
        {
            return false;
        }
        return true;
    }

    private static void LogBadHeader(Virtqueue q, ReadOnlySpan<byte> h)
    {
        // once per queue is enough to name the problem; the counter says how often
        if (s_state.Get(q) is { } s && s.Stats.BadHeaders == 1)
            q.Logger.LogError("queue {Queue}: virtio-net header lies (flags {Flags}, gso {Gso}); frame dropped", q.Index, h[0], h[1]);
    }

    /// <summary>The RARP broadcast DPDK sends after SEND_RARP so switches learn the migrated guest's MAC.</summary>
    private static bool TryMakeRarp(VhostDevice device, PacketPool pool, out Packet packet)
    {
        if (device.RarpMac is not { } mac || !pool.TryAllocate(out packet))
        {
            packet = default;
            return false;
        }
        var d = pool.DataOf(packet.Index);
        d[..60].Clear();
        d[..6].Fill(0xff);
        mac.CopyTo(d[6..]);
        BinaryPrimitives.WriteUInt16BigEndian(d[12..], 0x8035); // RARP
        BinaryPrimitives.WriteUInt16BigEndian(d[14..], 1);      // Ethernet
        BinaryPrimitives.WriteUInt16BigEndian(d[16..], 0x0800); // IPv4
        d[18] = 6;
        d[19] = 4;
        BinaryPrimitives.WriteUInt16BigEndian(d[20..], 3);      // reverse request
        mac.CopyTo(d[22..]);
        mac.CopyTo(d[32..]);
        ref var m = ref pool.MetaOf(packet.Index);
        m.DataLength = 60;
        m.PacketLength = 60;
        return true;
    }
}
