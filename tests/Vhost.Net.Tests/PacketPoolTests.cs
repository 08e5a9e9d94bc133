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
}
