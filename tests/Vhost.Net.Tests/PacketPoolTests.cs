using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Vhost.Net;

namespace Vhost.Net.Tests;

public sealed class PacketPoolTests
{
    /// <summary>
    /// A burst's buffers must not crowd into a few L1 sets (addresses 4 KiB apart share one): 32 buffers fall
    /// into 32 distinct sets of a 64-set cache, and each buffer's room ends before the next begins.
    /// </summary>
    [Theory]
    [InlineData(2048)]
    [InlineData(4096)]
    [InlineData(1500)]
    [InlineData(64)]
    public void BuffersOfABurstLieInDistinctCacheSets(int room)
    {
        using var pool = new PacketPool(32, room);
        Assert.True(pool.Stride >= room);
        Assert.Equal(1, pool.Stride / 64 % 2);
        var packets = new Packet[32];
        for (int i = 0; i < packets.Length; i++) Assert.True(pool.TryAllocate(out packets[i]));
        ref byte first = ref MemoryMarshal.GetReference(packets.Single(p => p.Index == 0).Data);
        var sets = new HashSet<long>();
        foreach (var p in packets)
        {
            Assert.Equal(room, p.Data.Length);
            long offset = Unsafe.ByteOffset(ref first, ref MemoryMarshal.GetReference(p.Data));
            Assert.Equal((long)p.Index * pool.Stride, offset);
            sets.Add(offset / 64 % 64);
        }
        Assert.Equal(32, sets.Count);
        pool.Free(packets);
    }

    [Fact]
    public void FillingOneBufferLeavesItsNeighboursAlone()
    {
        using var pool = new PacketPool(3, 2048);
        var p = new Packet[3];
        for (int i = 0; i < 3; i++) Assert.True(pool.TryAllocate(out p[i]));
        p[0].Data.Fill(1);
        p[2].Data.Fill(3);
        p[1].Data.Fill(2);
        Assert.All(p[0].Data.ToArray(), b => Assert.Equal(1, b));
        Assert.All(p[2].Data.ToArray(), b => Assert.Equal(3, b));
        pool.Free(p);
    }

    [Fact]
    public void ACopyCarriesEveryBufferOfTheChainAndTheOffloadsAndAPoolTooSmallTakesNothing()
    {
        using var from = new PacketPool(8, 2048);
        using var to = new PacketPool(8, 1024);
        var frame = new byte[5000];
        new Random(7).NextBytes(frame);
        Assert.True(from.TryCreate(frame, out var p));
        p.Meta.Offloads = PacketOffloads.NeedsCsum;
        p.Meta.GsoType = 1;
        p.Meta.GsoSize = 1448;
        p.Meta.HeaderLength = 54;
        p.Meta.CsumStart = 34;
        p.Meta.CsumOffset = 16;
        // 2048-byte buffers do not fit 1024-byte ones: refused, nothing taken
        Assert.False(to.TryCopy(p, out _));
        Assert.Equal(8, to.Available);
        using var same = new PacketPool(8, 2048);
        Assert.True(same.TryCopy(p, out var c));
        Assert.Equal(5, same.Available);
        Assert.Equal(5000, c.Length);
        var back = new byte[5000];
        Assert.Equal(5000, same.CopyOut(c, back));
        Assert.Equal(frame, back);
        Assert.Equal(PacketOffloads.NeedsCsum, c.Meta.Offloads);
        Assert.Equal((1, 1448, 54, 34, 16), (c.Meta.GsoType, c.Meta.GsoSize, c.Meta.HeaderLength, c.Meta.CsumStart, c.Meta.CsumOffset));
        // a pool with too few buffers for the chain gives back the ones it took
        using var small = new PacketPool(2, 2048);
        Assert.False(small.TryCopy(p, out _));
        Assert.Equal(2, small.Available);
        same.Free(c);
        from.Free(p);
        Assert.Equal(8, same.Available);
    }
}
