using Vhost.Rings;
using Vhost.Testing.Rings;

namespace Vhost.Tests.Rings;

/// <summary>
/// <see cref="Virtqueue.Fill"/> and <see cref="Virtqueue.Take"/>: one-descriptor buffers served straight from
/// the ring, and the hand-over to <see cref="Virtqueue.Pop"/> wherever they stop.
/// </summary>
public sealed class RingFastPathTests
{
    /// <summary>Item i needs <c>Sizes[i]</c> bytes (0: decline) and is filled with byte i + 1.</summary>
    private ref struct PatternFiller(int[] sizes) : IBufferFiller
    {
        public int Filled;

        public readonly int Needed(int index) => sizes[index];

        public void Fill(int index, Span<byte> buffer)
        {
            buffer.Fill((byte)(index + 1));
            Filled++;
        }
    }

    /// <summary>Copies each buffer it takes; declines the item at <c>declineAt</c>.</summary>
    private ref struct RecordingTaker(List<byte[]> seen, int declineAt) : IBufferTaker
    {
        public readonly bool Take(int index, ReadOnlySpan<byte> buffer)
        {
            if (index == declineAt) return false;
            seen.Add(buffer.ToArray());
            return true;
        }
    }

    private static List<UsedElement> Drain(RingHarness h)
    {
        var all = new List<UsedElement>();
        while (h.Driver.TryGetUsed(out var u)) all.Add(u);
        return all;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void FillStopsAtAChainAndPopTakesOverInRingOrder(bool packed)
    {
        using var h = new RingHarness(packed);
        ulong a = h.Memory.Allocate(256), b = h.Memory.Allocate(256), c1 = h.Memory.Allocate(16), c2 = h.Memory.Allocate(256), d = h.Memory.Allocate(256);
        ushort[] ids =
        [
            h.Driver.Add(new DriverBuffer(a, 256, true)),
            h.Driver.Add(new DriverBuffer(b, 256, true)),
            h.Driver.Add(new DriverBuffer(c1, 16, true), new DriverBuffer(c2, 256, true)),
            h.Driver.Add(new DriverBuffer(d, 256, true)),
        ];
        var filler = new PatternFiller([100, 101, 102, 103]);
        Assert.Equal(2, h.Queue.Fill(ref filler, 4));
        Assert.Equal(2, filler.Filled);
        Assert.Equal(1, h.Interrupts);
        Assert.All(h.Memory.Span(a, 100).ToArray(), x => Assert.Equal(1, x));
        Assert.Equal(0, h.Memory.Span(a + 100, 1)[0]);
        Assert.All(h.Memory.Span(b, 101).ToArray(), x => Assert.Equal(2, x));
        // the chain and what follows it are the general path's
        Assert.Equal(2, h.Pop());
        h.Queue.PushUsed(h.Chains[0], 7);
        h.Queue.PushUsed(h.Chains[1], 9);
        h.Queue.FlushUsed();
        Assert.Equal(
            [new UsedElement(ids[0], 100), new UsedElement(ids[1], 101), new UsedElement(ids[2], 7), new UsedElement(ids[3], 9)],
            Drain(h));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void FillLeavesShortReadableOrUnmappedBuffersToPop(bool packed)
    {
        using var h = new RingHarness(packed);
        ulong a = h.Memory.Allocate(256);
        h.Driver.Add(new DriverBuffer(a, 50, true));
        var filler = new PatternFiller([100]);
        Assert.Equal(0, h.Queue.Fill(ref filler, 1));
        Assert.Equal(1, h.Pop());
        h.Queue.PushUsed(h.Chains[0], 0);
        h.Queue.FlushUsed();
        Drain(h);

        h.Driver.Add(new DriverBuffer(a, 256, false));
        Assert.Equal(0, h.Queue.Fill(ref filler, 1));
        Assert.Equal(1, h.Pop());
        h.Queue.PushUsed(h.Chains[0], 0);
        h.Queue.FlushUsed();
        Drain(h);

        // outside guest memory: Fill passes, Pop refuses it as a bad chain
        h.Driver.Add(new DriverBuffer(0xdead_0000_0000, 256, true));
        Assert.Equal(0, h.Queue.Fill(ref filler, 1));
        Assert.Equal(0, h.Pop());
        Assert.Equal(1, h.Queue.BadChains);
        Assert.Equal(0u, Assert.Single(Drain(h)).Length);
        Assert.Equal(0, filler.Filled);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void FillWaitsWhileUsedElementsAreStaged(bool packed)
    {
        using var h = new RingHarness(packed);
        h.Driver.Add(new DriverBuffer(h.Memory.Allocate(256), 256, true));
        h.Driver.Add(new DriverBuffer(h.Memory.Allocate(256), 256, true));
        Assert.Equal(2, h.Queue.Pop(h.Chains.AsSpan(0, 1), h.Segments) + h.Queue.Pop(h.Chains.AsSpan(1, 1), h.Segments.AsSpan(1)));
        h.Queue.PushUsed(h.Chains[0], 1);
        h.Driver.Add(new DriverBuffer(h.Memory.Allocate(256), 256, true));
        var filler = new PatternFiller([10]);
        // staged elements must reach the ring first, in their order
        Assert.Equal(0, h.Queue.Fill(ref filler, 1));
        h.Queue.PushUsed(h.Chains[1], 2);
        h.Queue.FlushUsed();
        Assert.Equal(1, h.Queue.Fill(ref filler, 1));
        Assert.Equal([1u, 2u, 10u], Drain(h).Select(u => u.Length));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TakeHandsOverReadableBuffersUntilDeclined(bool packed)
    {
        using var h = new RingHarness(packed);
        var ids = new List<ushort>();
        for (int i = 0; i < 3; i++)
        {
            ulong g = h.Memory.Allocate(64);
            h.Memory.Span(g, 64).Fill((byte)(0x10 + i));
            ids.Add(h.Driver.Add(new DriverBuffer(g, (uint)(40 + i), false)));
        }
        var seen = new List<byte[]>();
        var taker = new RecordingTaker(seen, declineAt: 2);
        Assert.Equal(2, h.Queue.Take(ref taker, 8));
        Assert.Equal([40, 41], seen.Select(s => s.Length));
        Assert.All(seen[1], x => Assert.Equal(0x11, x));
        Assert.Equal([new UsedElement(ids[0], 0), new UsedElement(ids[1], 0)], Drain(h));
        // the declined buffer is still the ring's next
        Assert.Equal(1, h.Pop());
        Assert.Equal(ids[2], h.Chains[0].Id);
        Assert.Equal(42u, h.Chains[0].ReadableBytes);
    }

    /// <summary>With eviction on, taken buffers (short, line-straddling, longer than a page) arrive whole and stay unchanged.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TakeWithEvictionKeepsEveryByte(bool packed)
    {
        using var h = new RingHarness(packed);
        h.Queue.Policy = new QueuePolicy { TakenLineEviction = LineEviction.Always, TakenLineEvictionSkip = 12 };
        Assert.True(h.Queue.EvictingTakenLines);
        int[] lengths = [12, 13, 76, 1514, 5000];
        var bufs = new List<ulong>();
        for (int i = 0; i < lengths.Length; i++)
        {
            ulong g = h.Memory.Allocate(8192) + (ulong)(52 + i);
            var span = h.Memory.Span(g, lengths[i]);
            for (int j = 0; j < span.Length; j++) span[j] = (byte)(j * 3 + i);
            h.Driver.Add(new DriverBuffer(g, (uint)lengths[i], false));
            bufs.Add(g);
        }
        var seen = new List<byte[]>();
        var taker = new RecordingTaker(seen, -1);
        Assert.Equal(lengths.Length, h.Queue.Take(ref taker, 8));
        for (int i = 0; i < lengths.Length; i++)
        {
            var expect = Enumerable.Range(0, lengths[i]).Select(j => (byte)(j * 3 + i)).ToArray();
            Assert.Equal(expect, seen[i]);
            Assert.Equal(expect, h.Memory.Span(bufs[i], lengths[i]).ToArray());
        }
        Assert.Equal(lengths.Length, Drain(h).Count);
    }

    [Fact]
    public void PackedFillPublishesWholeRingLinesAroundTheWrap()
    {
        // 6 items a round on a ring of 16: lines of four and singles alternate with the alignment
        using var h = new RingHarness(packed: true, size: 16);
        var bufs = Enumerable.Range(0, 6).Select(_ => h.Memory.Allocate(256)).ToArray();
        for (int round = 0; round < 20; round++)
        {
            var ids = bufs.Select(b => h.Driver.Add(new DriverBuffer(b, 256, true))).ToArray();
            var filler = new PatternFiller([10, 11, 12, 13, 14, 15]);
            Assert.Equal(6, h.Queue.Fill(ref filler, 6));
            Assert.Equal(ids.Select((id, i) => new UsedElement(id, (uint)(10 + i))), Drain(h));
            for (int i = 0; i < 6; i++) Assert.Equal((byte)(i + 1), h.Memory.Span(bufs[i] + (ulong)(9 + i), 1)[0]);
        }
    }

    /// <summary>
    /// A chain the general path popped and has not returned yet leaves the used index behind the available
    /// one, so each used descriptor Fill writes lands in an earlier buffer's slot and must carry the filled
    /// buffer's own id; the held chain comes back after them. Ten rounds on a ring of 16 cross the wrap.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void FillWhileAPoppedChainIsOutstandingReturnsEveryIdWithItsLength(bool packed)
    {
        using var h = new RingHarness(packed, size: 16);
        ulong heldBuffer = h.Memory.Allocate(256);
        var bufs = Enumerable.Range(0, 4).Select(_ => h.Memory.Allocate(256)).ToArray();
        for (int round = 0; round < 10; round++)
        {
            ushort heldId = h.Driver.Add(new DriverBuffer(heldBuffer, 256, true));
            Assert.Equal(1, h.Pop());
            var held = h.Chains[0];
            var ids = bufs.Select(b => h.Driver.Add(new DriverBuffer(b, 256, true))).ToArray();
            var filler = new PatternFiller([20, 21, 22, 23]);
            Assert.Equal(4, h.Queue.Fill(ref filler, 4));
            h.Queue.PushUsed(held, 7);
            h.Queue.FlushUsed();
            Assert.Equal([.. ids.Select((id, i) => new UsedElement(id, (uint)(20 + i))), new UsedElement(heldId, 7)], Drain(h));
        }
    }

    /// <summary>
    /// NothingToPop lets the net bursts skip the general path when the fast path came up short because the ring
    /// ran dry; it must never say "nothing" while Pop has something to serve or to report.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void NothingToPopOnlyWhileTheRingIsDry(bool packed)
    {
        using var h = new RingHarness(packed);
        Assert.True(h.Queue.NothingToPop);
        h.Driver.Add(new DriverBuffer(h.Memory.Allocate(256), 256, false));
        Assert.False(h.Queue.NothingToPop);
        var seen = new List<byte[]>();
        var taker = new RecordingTaker(seen, -1);
        Assert.Equal(1, h.Queue.Take(ref taker, 4));
        Assert.True(h.Queue.NothingToPop);
        if (!packed)
        {
            // an avail index more than a ring ahead: the fast path leaves it alone, Pop must see it and fault the queue
            ((DriverSplitRing)h.Driver).SetAvailIndex(200);
            Assert.False(h.Queue.NothingToPop);
        }
    }

    /// <summary>A packed in-order ring whose Take holds its returns, as Vhost.Net's transmit queues do.</summary>
    private static RingHarness HoldingRing(ushort size = 64)
    {
        var h = new RingHarness(packed: true, size: size, inOrder: true);
        h.Queue.Policy = new QueuePolicy { BatchInOrderUsed = true, HoldTakenReturns = true };
        return h;
    }

    private static ushort[] Offer(RingHarness h, int count) =>
        [.. Enumerable.Range(0, count).Select(_ => h.Driver.Add(new DriverBuffer(h.Memory.Allocate(64), 60, false)))];

    private static int TakeAll(RingHarness h, int count)
    {
        var taker = new RecordingTaker([], -1);
        return h.Queue.Take(ref taker, count);
    }

    /// <summary>
    /// Full Takes hold their buffers; the first Take that finds the ring dry returns all of them, in order, with
    /// one used descriptor (the in-order driver expands it), and interrupts once.
    /// </summary>
    [Fact]
    public void HeldTakesComeBackWhenTheRingRunsDry()
    {
        using var h = HoldingRing();
        var ids = new List<ushort>();
        for (int round = 0; round < 3; round++)
        {
            ids.AddRange(Offer(h, 8));
            Assert.Equal(8, TakeAll(h, 8));
            Assert.Empty(Drain(h));
        }
        Assert.Equal(0, h.Interrupts);
        Assert.Equal(0, TakeAll(h, 8));
        Assert.Equal(ids.Select(id => new UsedElement(id, 0)), Drain(h));
        Assert.Equal(1, h.Interrupts);
    }

    /// <summary>A Take that gets less than it asked for returns everything at once, held buffers included.</summary>
    [Fact]
    public void AShortTakeReturnsWhatIsHeldWithIt()
    {
        using var h = HoldingRing();
        var ids = Offer(h, 8).Concat(Offer(h, 5)).ToArray();
        Assert.Equal(8, TakeAll(h, 8));
        Assert.Equal(5, TakeAll(h, 8));
        Assert.Equal(ids.Select(id => new UsedElement(id, 0)), Drain(h));
    }

    /// <summary>Holding stops at three quarters of the ring, here 48 of 64, and the laps that follow keep the count.</summary>
    [Fact]
    public void HoldingStopsAtThreeQuartersOfTheRing()
    {
        using var h = HoldingRing(size: 64);
        for (int lap = 0; lap < 4; lap++)
        {
            var ids = new List<ushort>();
            for (int i = 0; i < 5; i++)
            {
                ids.AddRange(Offer(h, 8));
                Assert.Equal(8, TakeAll(h, 8));
                Assert.Empty(Drain(h));
            }
            ids.AddRange(Offer(h, 8));
            Assert.Equal(8, TakeAll(h, 8));
            Assert.Equal(ids.Select(id => new UsedElement(id, 0)), Drain(h));
        }
    }

    /// <summary>GET_VRING_BASE (Stop) and a chain completed through Pop never leave held buffers behind or out of order.</summary>
    [Fact]
    public void StopAndThePopPathReturnHeldBuffersFirst()
    {
        using (var h = HoldingRing())
        {
            var ids = Offer(h, 8);
            Assert.Equal(8, TakeAll(h, 8));
            h.Queue.Stop();
            Assert.Equal(ids.Select(id => new UsedElement(id, 0)), Drain(h));
        }
        using (var h = HoldingRing())
        {
            var ids = Offer(h, 8);
            Assert.Equal(8, TakeAll(h, 8));
            ushort chain = h.Driver.Add(new DriverBuffer(h.Memory.Allocate(16), 12, false), new DriverBuffer(h.Memory.Allocate(64), 60, false));
            h.PopOneAndComplete();
            Assert.Equal([.. ids.Select(id => new UsedElement(id, 0)), new UsedElement(chain, 0)], Drain(h));
        }
        using (var h = HoldingRing())
        {
            var ids = Offer(h, 8);
            Assert.Equal(8, TakeAll(h, 8));
            h.Queue.ReturnHeldTaken();
            Assert.Equal(ids.Select(id => new UsedElement(id, 0)), Drain(h));
            // switched off with nothing held: each Take returns its own batch again
            h.Queue.Policy = h.Queue.Policy with { HoldTakenReturns = false };
            var more = Offer(h, 8);
            Assert.Equal(8, TakeAll(h, 8));
            Assert.Equal(more.Select(id => new UsedElement(id, 0)), Drain(h));
        }
    }
}
