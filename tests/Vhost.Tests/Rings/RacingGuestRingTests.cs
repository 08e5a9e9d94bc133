using Vhost.Interop;
using Vhost.Rings;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;

namespace Vhost.Tests.Rings;

/// <summary>
/// A second guest vCPU (<see cref="GuestRacer"/>) flips one ring field between a good and a bad value while the
/// device pops: each chain comes out whole as the good value gives it, or is refused as the bad value makes it,
/// never a mix. A device that reads the field twice (checks one value, uses the other) makes the mix, which
/// these tests catch: every bad value here is one the device must refuse, so a chain served with any part of
/// the bad value, or with a shape neither value gives, is the double fetch.
/// </summary>
public sealed class RacingGuestRingTests
{
    /// <summary>Rounds per test, each one pop with the field moving: thousands, since a read-twice window of a few tens of ns is hit about once in a thousand.</summary>
    private const int Rounds = 6000;

    private const ulong Unmapped = 0x40_0000_0000;

    public enum Field
    {
        Addr,
        Len,
        Flags,
        Next,
    }

    /// <summary>The chain the driver posts: buffers of distinct lengths, so a segment names the buffer it came from.</summary>
    private static DriverBuffer[] Chain(RingHarness h, int length)
    {
        var all = new DriverBuffer[length];
        for (int i = 0; i < length; i++)
        {
            bool writable = i == length - 1 && length > 1;
            uint len = (uint)(64 * (i + 1));
            all[i] = new DriverBuffer(h.Memory.Allocate(len, 64), len, writable);
        }
        return all;
    }

    /// <summary>Descriptor slot of the chain's <paramref name="position"/>-th buffer (split: follow next; packed: consecutive).</summary>
    private static int SlotOf(RingHarness h, int head, int position)
    {
        int slot = head;
        for (int i = 0; i < position; i++)
        {
            slot = h.Setup.Packed ? (slot + 1) % h.Setup.Size : h.Setup.Desc.Ref<ushort>((nuint)(slot * 16 + 14));
        }
        return slot;
    }

    /// <summary>What the device made of a chain: its buffers as guest (address, length, writable).</summary>
    private static List<(ulong Gpa, uint Len, bool Writable)> Segments(RingHarness h, in DescriptorChain c)
    {
        Assert.True(h.Guest.TryTranslate(RingHarness.Base, 1, out var origin));
        var list = new List<(ulong, uint, bool)>();
        for (int i = 0; i < c.SegmentCount; i++)
        {
            var s = h.Segments[c.SegmentStart + i];
            list.Add((RingHarness.Base + (ulong)(s.Window.Address - origin.Address), (uint)s.Window.Length, s.IsWritable));
        }
        // the chain's byte counts must be what its segments hold: counted from one read, mapped from another is a mix
        Assert.Equal(c.ReadableBytes + c.WritableBytes, (long)list.Sum(s => (long)s.Item2));
        Assert.Equal(c.ReadableBytes, (long)list.Take(c.ReadableSegments).Sum(s => (long)s.Item2));
        Assert.All(list.Take(c.ReadableSegments), s => Assert.False(s.Item3));
        Assert.All(list.Skip(c.ReadableSegments), s => Assert.True(s.Item3));
        return list;
    }

    /// <summary>Where the field lies and its two values, for the chain's buffer at <paramref name="position"/>.</summary>
    private static (ulong Gpa, int Width, ulong Good, ulong Bad) Target(RingHarness h, Field field, int slot, DriverBuffer b, bool last)
    {
        ulong desc = h.Setup.DescGpa + (ulong)slot * 16;
        bool packed = h.Setup.Packed;
        switch (field)
        {
            case Field.Addr:
                return (desc, 8, b.Gpa, Unmapped);
            case Field.Len:
                // past the end of guest memory: the walk must refuse it
                return (desc + 8, 4, b.Length, 0x4000_0000);
            case Field.Flags:
            {
                // the flags as the driver wrote them, and with INDIRECT added (not negotiated here: refused)
                ushort good = h.Setup.Desc.Ref<ushort>((nuint)(slot * 16 + (packed ? 14 : 12)));
                return (desc + (ulong)(packed ? 14 : 12), 2, good, (ushort)(good | DriverRing.Indirect | DriverRing.Write));
            }
            default:
                Assert.False(packed || last, "next is a split-ring field of a chained descriptor");
                return (desc + 14, 2, h.Setup.Desc.Ref<ushort>((nuint)(slot * 16 + 14)), 1000);
        }
    }

    [Theory]
    [InlineData(false, Field.Addr, 1, 0)]
    [InlineData(false, Field.Len, 1, 0)]
    [InlineData(false, Field.Flags, 1, 0)]
    [InlineData(false, Field.Addr, 3, 1)]
    [InlineData(false, Field.Len, 3, 1)]
    [InlineData(false, Field.Flags, 3, 1)]
    [InlineData(false, Field.Next, 3, 0)]
    [InlineData(false, Field.Len, 3, 2)]
    [InlineData(true, Field.Addr, 1, 0)]
    [InlineData(true, Field.Len, 1, 0)]
    [InlineData(true, Field.Flags, 1, 0)]
    [InlineData(true, Field.Addr, 3, 1)]
    [InlineData(true, Field.Len, 3, 1)]
    [InlineData(true, Field.Flags, 3, 1)]
    [InlineData(true, Field.Flags, 3, 0)]
    public void DescriptorFieldFlippedUnderPopGivesTheWholeChainOrARefusal(bool packed, Field field, int length, int position)
    {
        using var h = new RingHarness(packed, size: 64, indirect: false);
        using var racer = new GuestRacer(h.Memory, field switch { Field.Addr => 8, Field.Len => 4, _ => 2 });
        var chain = Chain(h, length);
        var whole = chain.Select(b => (b.Gpa, b.Length, b.Writable)).ToList();
        int served = 0, refused = 0;
        // at least Rounds, and on until both outcomes were seen: a racer descheduled on a loaded machine holds one value for a while
        for (int round = 0; round < 16 * Rounds && (round < Rounds || served == 0 || refused == 0); round++)
        {
            int head = packed ? h.Packed.NextSlot : -1;
            ushort id = h.Driver.Add(chain);
            if (!packed) head = id;
            int slot = SlotOf(h, head, position);
            var (gpa, width, good, bad) = Target(h, field, slot, chain[position], position == length - 1);
            long badBefore = h.Queue.BadChains;
            racer.Race(gpa, good, bad);
            int n = h.Pop();
            racer.Hold();
            Assert.Null(h.Fault);
            // a refused packed chain is marked used within Pop, over its head's len, id and flags: that ends the race
            Assert.False(racer.Displaced && !(n == 0 && packed && slot == head));
            if (n == 1)
            {
                // served: exactly the chain the driver posted
                Assert.Equal(id, h.Chains[0].Id);
                Assert.Equal(whole, Segments(h, h.Chains[0]));
                Assert.Equal(badBefore, h.Queue.BadChains);
                h.Queue.PushUsed(h.Chains[0], 0);
                h.Queue.FlushUsed();
                served++;
            }
            else
            {
                // refused: counted, and given back unused (Pop flushes a pop of bad chains only)
                Assert.Equal(0, n);
                Assert.Equal(badBefore + 1, h.Queue.BadChains);
                refused++;
            }
            Assert.True(h.Driver.TryGetUsed(out var u), $"round {round}: no used element");
            Assert.Equal(new UsedElement(id, 0), u);
            Assert.False(h.Driver.TryGetUsed(out _));
        }
        Assert.True(served > 0 && refused > 0, $"the race never went both ways: {served} served, {refused} refused, {racer.Flips} flips");
    }

    /// <summary>
    /// The split avail ring's entry flips between the chain's head and an index past the table: the chain is
    /// served, or the entry refused (counted, nothing returned, as for any head out of range), never walked from the bad index.
    /// </summary>
    [Fact]
    public void AvailRingEntryFlippedUnderPopIsTheHeadOrARefusal()
    {
        using var h = new RingHarness(packed: false, size: 64, indirect: false);
        using var racer = new GuestRacer(h.Memory, 2);
        ulong a = h.Memory.Allocate(64, 64), b = h.Memory.Allocate(128, 64);
        // the chain in fixed slots 5 → 9, published by hand: a refused entry returns nothing, so no free list to keep
        h.Driver.WriteDescriptor(5, a, 64, DriverRing.Next, 9);
        h.Driver.WriteDescriptor(9, b, 128, DriverRing.Write, 0);
        int served = 0, refused = 0;
        // at least Rounds, and on until both outcomes were seen: a racer descheduled on a loaded machine holds one value for a while
        for (int round = 0; round < 16 * Rounds && (round < Rounds || served == 0 || refused == 0); round++)
        {
            ushort idx = h.Split.AvailIndex;
            h.Split.Publish(5);
            ulong entry = h.Setup.AvailGpa + 4 + 2 * (ulong)(idx % h.Setup.Size);
            long badBefore = h.Queue.BadChains;
            racer.Race(entry, 5, 64 + 3);
            int n = h.Pop();
            racer.Hold();
            Assert.Null(h.Fault);
            if (n == 1)
            {
                Assert.Equal(5, h.Chains[0].Id);
                Assert.Equal([(a, 64u, false), (b, 128u, true)], Segments(h, h.Chains[0]));
                h.Queue.PushUsed(h.Chains[0], 0);
                h.Queue.FlushUsed();
                Assert.Equal(new UsedElement(5, 0), h.Driver.WaitUsed(TimeSpan.FromSeconds(5)));
                served++;
            }
            else
            {
                Assert.Equal(0, n);
                Assert.Equal(badBefore + 1, h.Queue.BadChains);
                refused++;
            }
            Assert.False(h.Driver.TryGetUsed(out _));
            Assert.Equal(0, h.Queue.AvailableCount);
        }
        Assert.True(served > 0 && refused > 0, $"the race never went both ways: {served} served, {refused} refused, {racer.Flips} flips");
    }

    /// <summary>
    /// The split avail index flips between one past the device's position and more than a ring ahead: one chain
    /// is popped, or the queue faults on the index, never a run of entries the driver did not publish.
    /// </summary>
    [Fact]
    public void AvailIndexFlippedUnderPopGivesOneChainOrAFault()
    {
        int served = 0, faults = 0;
        for (int round = 0; round < Rounds && faults < 40; round++)
        {
            using var h = new RingHarness(packed: false, size: 16, indirect: false);
            using var racer = new GuestRacer(h.Memory, 2);
            ulong a = h.Memory.Allocate(64, 64);
            // every ring entry names the chain: a device that pops past the published index pops it again
            h.Driver.WriteDescriptor(3, a, 64, 0, 0);
            for (int i = 0; i < h.Setup.Size; i++) h.Setup.Avail.Ref<ushort>((nuint)(4 + 2 * i)) = 3;
            for (; round < Rounds; round++)
            {
                ushort idx = h.Split.AvailIndex;
                h.Split.Publish(3);
                racer.Race(h.Setup.AvailGpa + 2, (ushort)(idx + 1), (ushort)(idx + 1 + h.Setup.Size + 1));
                int n = h.Pop();
                racer.Hold();
                Assert.Equal(0, h.Queue.BadChains);
                if (h.Fault != null)
                {
                    Assert.Equal(0, n);
                    Assert.Contains("avail index", h.Fault);
                    faults++;
                    break;
                }
                Assert.Equal(1, n);
                Assert.Equal([(a, 64u, false)], Segments(h, h.Chains[0]));
                h.Queue.PushUsed(h.Chains[0], 0);
                h.Queue.FlushUsed();
                Assert.Equal(new UsedElement(3, 0), h.Driver.WaitUsed(TimeSpan.FromSeconds(5)));
                served++;
            }
        }
        Assert.True(served > 0 && faults > 0, $"the race never went both ways: {served} served, {faults} faults");
    }

    /// <summary>
    /// used_event (split) and the driver's event suppression (packed) flip between "interrupt me now" and "not for a
    /// long while" as the device publishes: the device decides from one read, so each flush interrupts at most once,
    /// and every chain still completes.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void EventIndexFlippedUnderFlushInterruptsAtMostOncePerFlush(bool packed)
    {
        using var h = new RingHarness(packed, size: 64, eventIdx: true, indirect: false);
        using var racer = new GuestRacer(h.Memory, 2);
        ulong a = h.Memory.Allocate(64, 64);
        int asked = 0, quiet = 0;
        for (int round = 0; round < 16 * Rounds && (round < Rounds || asked == 0 || quiet == 0); round++)
        {
            ushort id = h.Driver.Add(new DriverBuffer(a, 64, true));
            Assert.Equal(1, h.Pop());
            h.Queue.PushUsed(h.Chains[0], 64);
            int before = h.Interrupts;
            if (packed)
            {
                // flags: EVENT_ENABLE or EVENT_DISABLE
                h.Packed.SetDriverEvent(0);
                racer.Race(h.Setup.AvailGpa + 2, 0, 1);
            }
            else
            {
                ushort usedIdx = h.Split.UsedIndex;
                h.Split.SetUsedEvent(usedIdx);
                racer.Race(h.Setup.AvailGpa + 4 + 2 * (ulong)h.Setup.Size, usedIdx, (ushort)(usedIdx + 0x4000));
            }
            h.Queue.FlushUsed();
            racer.Hold();
            int raised = h.Interrupts - before;
            Assert.InRange(raised, 0, 1);
            if (raised == 1) asked++;
            else quiet++;
            Assert.Equal(new UsedElement(id, 64), h.Driver.WaitUsed(TimeSpan.FromSeconds(5)));
            Assert.Null(h.Fault);
        }
        Assert.True(asked > 0 && quiet > 0, $"the race never went both ways: {asked} interrupts, {quiet} suppressed, {racer.Flips} flips");
    }
}
