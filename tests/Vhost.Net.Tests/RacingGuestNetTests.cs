using System.Buffers.Binary;
using Vhost.Device;
using Vhost.Net;
using Vhost.Protocol;
using Vhost.Testing.BackEnd;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;

namespace Vhost.Net.Tests;

/// <summary>
/// A second guest vCPU (<see cref="GuestRacer"/>) flips one field of the virtio-net header of transmitted frames
/// between a good value and one the header check refuses, while frames flow: each frame is delivered with exactly
/// the good header's offload metadata or dropped as a bad header, every buffer comes back once, and a second device
/// keeps forwarding. A frame carrying any part of the bad value is the header checked from one read and used from another.
/// </summary>
public sealed class RacingGuestNetTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(10);
    private const int Frames = 4096, Batch = 32, FrameLength = 1000;

    private sealed class Net : IDisposable
    {
        public readonly TestBackEnd Be;
        public readonly TestFrontEnd Fe;
        public readonly DeviceSetup Setup;
        public readonly VhostDevice Dev;
        public readonly DriverRing Tx;

        public Net(bool packed)
        {
            Be = new TestBackEnd(extraFeatures: NetFeatures.Default);
            Fe = Be.Connect();
            ulong want = ~(VirtioFeature.Bit(VirtioFeature.LogAll) | VirtioFeature.Bit(VirtioFeature.AccessPlatform) | (packed ? 0 : VirtioFeature.Bit(VirtioFeature.RingPacked)));
            Setup = DeviceSetup.Run(Fe, new DeviceSetupOptions { Packed = packed, QueueSize = 256, MemorySize = 16 << 20, Features = want });
            Be.Ops.WaitFor("new");
            Dev = Be.Ops.LastNew!;
            Tx = DriverRing.Create(Setup[1], Setup.Memory);
            if (Tx is DriverPackedRing ptx) ptx.InOrder = Dev.HasFeature(VirtioFeature.InOrder);
        }

        public FrontEndMemory Memory => Setup.Memory;

        public void Dispose()
        {
            Setup.Dispose();
            Fe.Dispose();
            Be.Dispose();
        }
    }

    /// <summary>The device forwards: a plain frame sent is a frame dequeued, its buffer returned.</summary>
    private static void AssertStillForwards(Net n, PacketPool pool)
    {
        ulong b = n.Memory.Allocate(12 + 64, 64);
        var f = n.Memory.Span(b, 12 + 64);
        f.Clear();
        f[12] = 0x02;
        n.Tx.Add(new DriverBuffer(b, 12 + 64, false));
        var p = new Packet[1];
        Assert.Equal(1, VirtioNet.DequeueBurst(n.Dev, 1, pool, p));
        Assert.Equal(64, p[0].Length);
        pool.Free(p);
        // a packed in-order ring holds what Take got until a Take comes up short
        Assert.Equal(0, VirtioNet.DequeueBurst(n.Dev, 1, pool, p));
        n.Tx.WaitUsed(T);
        Assert.Null(n.Dev.FaultReason);
    }

    public enum HeaderField
    {
        Flags,
        GsoType,
        HdrLen,
        GsoSize,
        CsumStart,
        CsumOffset,
    }

    [Theory]
    [InlineData(false, HeaderField.Flags)]
    [InlineData(false, HeaderField.GsoType)]
    [InlineData(false, HeaderField.HdrLen)]
    [InlineData(false, HeaderField.GsoSize)]
    [InlineData(false, HeaderField.CsumStart)]
    [InlineData(false, HeaderField.CsumOffset)]
    [InlineData(true, HeaderField.GsoType)]
    [InlineData(true, HeaderField.HdrLen)]
    [InlineData(true, HeaderField.CsumStart)]
    [InlineData(true, HeaderField.CsumOffset)]
    public void TransmitHeaderFieldFlippedDeliversTheGoodHeaderOrDrops(bool packed, HeaderField field)
    {
        using var n = new Net(packed);
        using var other = new Net(packed);
        using var pool = new PacketPool(256);
        // NEEDS_CSUM at 14 + 16 (TCP over IPv4) and TSO4 of 500-byte segments after 54 header bytes: all checks pass
        var header = new byte[12];
        header[0] = 1;
        header[1] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(2), 54);
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(4), 500);
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(6), 14);
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(8), 16);
        ulong buffer = n.Memory.Allocate(12 + FrameLength, 64);
        header.CopyTo(n.Memory.Span(buffer, 12));
        n.Memory.Span(buffer + 12, FrameLength).Fill(0x11);
        n.Memory.Span(buffer + 12, 1)[0] = 0x02;
        // flags: GSO without NEEDS_CSUM; gso type: one never defined; lengths and offsets past the frame; gso_size 0
        var (offset, width, good, bad) = field switch
        {
            HeaderField.Flags => (0, 1, 1UL, 0UL),
            HeaderField.GsoType => (1, 1, 1UL, 0x7fUL),
            HeaderField.HdrLen => (2, 2, 54UL, 2000UL),
            HeaderField.GsoSize => (4, 2, 500UL, 0UL),
            HeaderField.CsumStart => (6, 2, 14UL, 2000UL),
            _ => (8, 2, 16UL, 2000UL),
        };
        using var racer = new GuestRacer(n.Memory, width);
        racer.Race(buffer + (ulong)offset, good, bad);
        var stats = VirtioNet.Stats(n.Dev, 1);
        var packets = new Packet[Batch];
        long delivered = 0;
        int sent = 0;
        // at least Frames, and on until both outcomes were seen: a racer descheduled on a loaded machine holds one value for a while
        for (; sent < 16 * Frames && (sent < Frames || delivered == 0 || stats.BadHeaders == 0); sent += Batch)
        {
            var ids = new HashSet<ushort>();
            for (int i = 0; i < Batch; i++) Assert.True(ids.Add(n.Tx.Add(new DriverBuffer(buffer, 12 + FrameLength, false))));
            long dropsBefore = stats.BadHeaders;
            int got = 0;
            for (int tries = 0; got + (int)(stats.BadHeaders - dropsBefore) < Batch; tries++)
            {
                Assert.True(tries < 1000, "the device stopped taking frames");
                int k = VirtioNet.DequeueBurst(n.Dev, 1, pool, packets);
                for (int i = 0; i < k; i++)
                {
                    // delivered: the good header's metadata exactly, nothing of the bad value
                    ref var m = ref packets[i].Meta;
                    Assert.Equal(FrameLength, packets[i].Length);
                    Assert.Equal(PacketOffloads.NeedsCsum, m.Offloads);
                    Assert.Equal((1, 500, 54, 14, 16), (m.GsoType, m.GsoSize, m.HeaderLength, m.CsumStart, m.CsumOffset));
                }
                pool.Free(packets.AsSpan(0, k));
                got += k;
            }
            delivered += got;
            Assert.Equal(Batch, got + (int)(stats.BadHeaders - dropsBefore));
            // every buffer back exactly once (in order, a batch may come back as one used element naming the last)
            int back = 0;
            while (back < Batch)
            {
                var u = n.Tx.WaitUsed(T);
                Assert.True(ids.Remove(u.Id), $"transmit id {u.Id} returned twice or never sent");
                back++;
            }
            if (sent % (8 * Batch) == 0) AssertStillForwards(other, pool);
        }
        racer.Hold();
        Assert.False(racer.Displaced);
        Assert.True(delivered > 0 && stats.BadHeaders > 0, $"the race never went both ways: {delivered} delivered, {stats.BadHeaders} dropped, {racer.Flips} flips");
        Assert.Equal(sent, delivered + stats.BadHeaders);
        Assert.Null(n.Dev.FaultReason);
        AssertStillForwards(n, pool);
        AssertStillForwards(other, pool);
    }
}
