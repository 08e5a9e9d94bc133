using System.Buffers.Binary;
using Vhost.Rings;

namespace Vhost.Tests.Rings;

public sealed class RingAllocationTests
{
    private const int Size = 64;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void PopPushFlushAllocateNothingAfterWarmUp(bool packed)
    {
        using var h = new RingHarness(packed, size: Size, eventIdx: true);
        ulong buf = h.Memory.Allocate(4096);
        // the driver side is written by hand here: the kit's driver allocates, and it runs on this thread too
        if (!packed)
        {
            for (int i = 0; i < Size; i++) h.Driver.WriteDescriptor(i, buf + (ulong)(64 * (i % 32)), 64, 2, 0);
        }
        var chains = h.Chains;
        var segments = h.Segments;
        ushort availIdx = 0;
        int slot = 0;
        bool wrap = true;

        void Round()
        {
            if (packed)
            {
                h.Driver.WriteDescriptor(slot, buf, 64, (ushort)(2 | (wrap ? 1 << 7 : 1 << 15)), (ushort)slot);
                if (++slot == Size) { slot = 0; wrap = !wrap; }
            }
            else
            {
                BinaryPrimitives.WriteUInt16LittleEndian(h.Setup.Avail.Span((nuint)(4 + 2 * (availIdx % Size)), 2), (ushort)(availIdx % Size));
                availIdx++;
                Volatile.Write(ref h.Setup.Avail.Ref<ushort>(2), availIdx);
            }
            int n = h.Queue.Pop(chains, segments);
            if (n != 1) throw new InvalidOperationException($"popped {n}");
            h.Queue.PushUsed(chains[0], 64);
            h.Queue.FlushUsed();
        }

        for (int i = 0; i < 1000; i++) Round();
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 100_000; i++) Round();
        long delta = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, delta);
        Assert.Equal(0, h.Queue.BadChains);
    }
}
