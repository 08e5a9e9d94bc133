using System.Buffers.Binary;
using Vhost.Interop;
using Vhost.Net;
using Vhost.Protocol;

namespace Vhost.Fuzz;

/// <summary>
/// Target (e): virtio-net transmit. A net device is set up through its messages with the features the input
/// picks (ring format, indirect, event idx, mergeable buffers, VERSION_1, IN_ORDER and the checksum and TSO
/// offloads), on a 128 KiB guest memory whose transmit ring (queue 1), receive ring (queue 0) and buffers come
/// from the input. <see cref="VirtioNet.DequeueBurst"/> runs until the transmit ring is empty (header checks,
/// copy-in, the fast path), and what it returns is sent back through <see cref="VirtioNet.EnqueueBurst"/> into
/// the receive ring. Besides anything thrown: no packet buffer may leak, every frame must hold what its chain
/// carried (at least an Ethernet header, at most the chain), and offload metadata must point inside the frame.
/// Input: two feature bytes, a size byte (low nibble transmit, high nibble receive: 2 &lt;&lt; (n &amp; 7)),
/// two u16 bases, transmit descriptors and avail ring (packed: driver event area), the same for receive, then
/// guest memory from 0x16000 on.
/// </summary>
internal static class NetTxTarget
{
    private const ulong Base = 0x10000;
    private const int MemSize = 128 * 1024;
    private const ulong TxDesc = Base, TxAvail = Base + 0x1000, TxUsed = Base + 0x2000;
    private const ulong RxDesc = Base + 0x3000, RxAvail = Base + 0x4000, RxUsed = Base + 0x5000;
    private const ulong Data = Base + 0x6000;
    private static readonly PacketPool Pool = new(512);
    private static readonly Packet[] Burst = new Packet[VirtioNet.MaxBurst];

    /// <summary>Feature bits the two input bytes choose from, in bit order.</summary>
    private static readonly int[] Choosable =
    [
        VirtioFeature.RingPacked, VirtioFeature.RingIndirectDesc, VirtioFeature.RingEventIdx, NetFeatures.MrgRxbuf,
        VirtioFeature.Version1, VirtioFeature.InOrder, NetFeatures.Csum, NetFeatures.HostTso4,
        NetFeatures.HostTso6, NetFeatures.HostUfo, NetFeatures.HostEcn, NetFeatures.GuestCsum,
        NetFeatures.GuestTso4, NetFeatures.GuestTso6,
    ];

    public static void Run(ReadOnlySpan<byte> data)
    {
        var r = new Program.Reader(data);
        int pick = r.U16();
        ulong features = 0;
        for (int i = 0; i < Choosable.Length; i++)
            if ((pick >> i & 1) != 0) features |= VirtioFeature.Bit(Choosable[i]);
        bool packed = VirtioFeature.Has(features, VirtioFeature.RingPacked);
        byte sizes = r.U8();
        int txSize = 2 << (sizes & 7), rxSize = 2 << (sizes >> 4 & 7);
        uint txBase = r.U16(), rxBase = r.U16();

        using var memFd = FileDescriptors.CreateMemFd("fuzz-net", MemSize);
        using (var map = MemoryMapping.Map(memFd, MemSize))
        {
            var m = map.Window;
            r.Take(16 * txSize).CopyTo(m.Span(At(TxDesc), 16 * txSize));
            r.Take(packed ? 4 : 6 + 2 * txSize).CopyTo(m.Span(At(TxAvail), 6 + 2 * txSize));
            r.Take(16 * rxSize).CopyTo(m.Span(At(RxDesc), 16 * rxSize));
            r.Take(packed ? 4 : 6 + 2 * rxSize).CopyTo(m.Span(At(RxAvail), 6 + 2 * rxSize));
            r.Take(MemSize - (int)At(Data)).CopyTo(m.Span(At(Data), MemSize - (int)At(Data)));
        }

        using var dev = new FuzzDevice(NetFeatures.Options("/fuzz"));
        if (!dev.SendU64(VhostUserRequest.SetFeatures, features)) return;
        if (!dev.SetMemTable(Base, MemSize, FileDescriptors.Duplicate(memFd))) return;
        if (!dev.StartQueue(0, (uint)rxSize, rxBase, RxDesc, RxAvail, RxUsed)) return;
        if (!dev.StartQueue(1, (uint)txSize, txBase, TxDesc, TxAvail, TxUsed)) return;
        var device = dev.Device;
        if (!device.IsRunning) return;
        int taken = 0, placed = 0;
        for (int round = 0; round < txSize + 2; round++)
        {
            int n = VirtioNet.DequeueBurst(device, 1, Pool, Burst);
            if (n == 0) break;
            taken += n;
            try
            {
                foreach (var p in Burst.AsSpan(0, n)) Check(p);
                placed += VirtioNet.EnqueueBurst(device, 0, Burst.AsSpan(0, n));
            }
            finally
            {
                Pool.Free(Burst.AsSpan(0, n));
            }
        }
        if (Log.Logger is Log.Stderr)
        {
            var tx = VirtioNet.Stats(device, 1);
            Console.Error.WriteLine($"nettx: {taken} frames dequeued, {placed} enqueued; transmit queue: {tx.BadHeaders} bad headers, {tx.Dropped} dropped");
        }
        if (Pool.Available != Pool.Count) throw new InvalidOperationException($"{Pool.Count - Pool.Available} packet buffers leaked");
    }

    private static nuint At(ulong gpa) => (nuint)(gpa - Base);

    /// <summary>A frame as the application sees it must be self-consistent, whatever the guest wrote.</summary>
    private static void Check(Packet p)
    {
        int len = p.Length, chained = 0;
        for (int b = p.Index; b >= 0; b = Pool.MetaOf(b).Next)
        {
            int d = Pool.MetaOf(b).DataLength;
            if (d < 0 || d > Pool.DataRoom) throw new InvalidOperationException($"buffer holds {d} bytes");
            chained += d;
        }
        if (chained != len) throw new InvalidOperationException($"frame of {len} bytes in buffers holding {chained}");
        if (len < 14) throw new InvalidOperationException($"frame of {len} bytes");
        ref var m = ref p.Meta;
        if ((m.Offloads & PacketOffloads.NeedsCsum) != 0 && m.CsumStart + m.CsumOffset + 2 > len)
            throw new InvalidOperationException($"checksum at {m.CsumStart}+{m.CsumOffset} outside a {len}-byte frame");
        if (m.GsoType != 0 && (m.GsoSize == 0 || m.HeaderLength > len))
            throw new InvalidOperationException($"GSO header length {m.HeaderLength} in a {len}-byte frame");
    }
}
