using System.Buffers.Binary;
using Vhost.Rings;
using Vhost.Testing.Rings;

namespace Vhost.Tests.Rings;

public sealed class RingDataPathTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SingleDescriptorChainIsPoppedAndReturned(bool packed)
    {
        using var h = new RingHarness(packed);
        ulong buf = h.Memory.Allocate(128);
        h.Memory.Span(buf, 128).Fill(0x11);
        ushort id = h.Driver.Add(new DriverBuffer(buf, 128, false));
        Assert.Equal(1, h.Pop());
        var c = h.Chains[0];
        Assert.Equal(id, c.Id);
        Assert.Equal(1, c.SegmentCount);
        Assert.Equal(128u, c.ReadableBytes);
        Assert.Equal(0u, c.WritableBytes);
        Assert.All(h.Segments[0].Window.AsSpan().ToArray(), b => Assert.Equal(0x11, b));
        Assert.Equal(0, h.Pop());
        h.Queue.PushUsed(c, 0);
        h.Queue.FlushUsed();
        Assert.True(h.Driver.TryGetUsed(out var u));
        Assert.Equal(new UsedElement(id, 0), u);
        Assert.False(h.Driver.TryGetUsed(out _));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void MultiDescriptorChainKeepsReadableBeforeWritable(bool packed)
    {
        using var h = new RingHarness(packed);
        ulong a = h.Memory.Allocate(10), b = h.Memory.Allocate(20), w = h.Memory.Allocate(30);
        ushort id = h.Driver.Add(new DriverBuffer(a, 10, false), new DriverBuffer(b, 20, false), new DriverBuffer(w, 30, true));
        Assert.Equal(1, h.Pop());
        var c = h.Chains[0];
        Assert.Equal(id, c.Id);
        Assert.Equal(3, c.SegmentCount);
        Assert.Equal(2, c.ReadableSegments);
        Assert.Equal(30u, c.ReadableBytes);
        Assert.Equal(30u, c.WritableBytes);
        Assert.False(h.Segments[1].IsWritable);
        Assert.True(h.Segments[2].IsWritable);
        h.Segments[2].Window.AsSpan().Fill(0x77);
        h.Queue.PushUsed(c, 30);
        h.Queue.FlushUsed();
        Assert.Equal(new UsedElement(id, 30), h.Driver.WaitUsed(TimeSpan.FromSeconds(1)));
        Assert.All(h.Memory.Span(w, 30).ToArray(), x => Assert.Equal(0x77, x));
        if (packed) Assert.Equal(3, c.SlotCount);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void IndirectTableIsWalked(bool packed)
    {
        using var h = new RingHarness(packed);
        ulong a = h.Memory.Allocate(8), w1 = h.Memory.Allocate(16), w2 = h.Memory.Allocate(32);
        ushort id = h.Driver.AddIndirect(new DriverBuffer(a, 8, false), new DriverBuffer(w1, 16, true), new DriverBuffer(w2, 32, true));
        Assert.Equal(1, h.Pop());
        var c = h.Chains[0];
        Assert.Equal(id, c.Id);
        Assert.Equal(1, c.SlotCount);
        Assert.Equal(3, c.SegmentCount);
        Assert.Equal(8u, c.ReadableBytes);
        Assert.Equal(48u, c.WritableBytes);
        Assert.Equal(0, h.Queue.BadChains);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TenThousandChainsWrapAroundA64EntryRing(bool packed)
    {
        using var h = new RingHarness(packed, size: 64);
        ulong buf = h.Memory.Allocate(4096);
        int wraps = 0;
        ushort lastPos = h.Queue.LastAvailIndex;
        for (int i = 0; i < 10_000; i++)
        {
            int n = 1 + i % 3; // chains of 1-3 slots so packed positions do not line up with the ring end
            var bufs = new DriverBuffer[n];
            for (int k = 0; k < n; k++) bufs[k] = new DriverBuffer(buf + (ulong)(64 * k), 64, k == n - 1);
            ushort id = h.Driver.Add(bufs);
            var c = h.PopOneAndComplete((uint)i % 64);
            Assert.Equal(id, c.Id);
            Assert.Equal((uint)(64 * (n - 1)), c.ReadableBytes);
            Assert.Equal(new UsedElement(id, (uint)i % 64), h.Driver.WaitUsed(TimeSpan.FromSeconds(1)));
            ushort pos = h.Queue.LastAvailIndex;
            if (packed ? pos < lastPos : (ushort)(pos % 64) < (ushort)(lastPos % 64)) wraps++;
            lastPos = pos;
        }
        Assert.Equal(0, h.Queue.BadChains);
        Assert.Null(h.Fault);
        // 20 000 slots (packed) or 10 000 entries (split) through 64: the position wrapped every ring's worth
        Assert.InRange(wraps, packed ? 300 : 150, 400);
        if (!packed) Assert.Equal(unchecked((ushort)10_000), h.Split.UsedIndex);
    }

    [Fact]
    public void SplitEventIdxInterruptsOnlyWhenUsedEventIsCrossed()
    {
        using var h = new RingHarness(packed: false, eventIdx: true);
        ulong buf = h.Memory.Allocate(64);
        h.Split.SetUsedEvent(2); // interrupt when the used index moves past 2, i.e. on the third element
        for (int i = 0; i < 5; i++)
        {
            h.Driver.Add(new DriverBuffer(buf, 64, true));
            h.PopOneAndComplete();
            h.Driver.WaitUsed(TimeSpan.FromSeconds(1));
            // the first completion after the ring starts always interrupts (as Linux and DPDK do), then only crossings
            Assert.Equal(i >= 2 ? 2 : 1, h.Interrupts);
        }
        // a batch flushed at once that jumps over the event still interrupts once
        h.Split.SetUsedEvent(6);
        for (int i = 0; i < 4; i++) h.Driver.Add(new DriverBuffer(buf, 64, true));
        Assert.Equal(4, h.Pop());
        for (int i = 0; i < 4; i++) h.Queue.PushUsed(h.Chains[i], 0);
        h.Queue.FlushUsed();
        Assert.Equal(3, h.Interrupts);
    }

    [Fact]
    public void SplitNoInterruptFlagSuppressesInterruptsWithoutEventIdx()
    {
        using var h = new RingHarness(packed: false);
        ulong buf = h.Memory.Allocate(64);
        h.Split.SetAvailFlags(1);
        h.Driver.Add(new DriverBuffer(buf, 64, true));
        h.PopOneAndComplete();
        Assert.Equal(0, h.Interrupts);
        h.Split.SetAvailFlags(0);
        h.Driver.Add(new DriverBuffer(buf, 64, true));
        h.PopOneAndComplete();
        Assert.Equal(1, h.Interrupts);
    }

    [Fact]
    public void PackedDriverEventFlagsDecideInterrupts()
    {
        using var h = new RingHarness(packed: true, eventIdx: true);
        ulong buf = h.Memory.Allocate(64);
        h.Packed.SetDriverEvent(1); // disable
        h.Driver.Add(new DriverBuffer(buf, 64, true));
        h.PopOneAndComplete();
        Assert.Equal(0, h.Interrupts);
        h.Packed.SetDriverEvent(0); // enable: every flush
        h.Driver.Add(new DriverBuffer(buf, 64, true));
        h.PopOneAndComplete();
        Assert.Equal(1, h.Interrupts);
        // desc mode: interrupt when the device writes the used descriptor at slot 3, wrap counter 1
        h.Packed.SetDriverEvent(2, 3 | 0x8000);
        for (int i = 0; i < 3; i++)
        {
            h.Driver.Add(new DriverBuffer(buf, 64, true));
            h.PopOneAndComplete();
        }
        Assert.Equal(2, h.Interrupts); // slots 2 and 3: only the one at 3 was asked for
        h.Driver.Add(new DriverBuffer(buf, 64, true));
        h.PopOneAndComplete();
        Assert.Equal(2, h.Interrupts);
    }

    [Fact]
    public void SetNotificationsEnabledWritesUsedFlagsWithoutEventIdx()
    {
        using var h = new RingHarness(packed: false);
        h.Queue.SetNotificationsEnabled(false);
        Assert.Equal(1, h.Split.UsedFlags & 1);
        h.Queue.SetNotificationsEnabled(true);
        Assert.Equal(0, h.Split.UsedFlags & 1);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void NotificationsTurnedOffStayOffAcrossARingRestart(bool packed)
    {
        // a polling application turns kicks off once; GET_VRING_BASE then a new start must not turn them on
        using var h = new RingHarness(packed);
        h.Queue.SetNotificationsEnabled(false);
        uint b = h.Queue.Stop();
        // the front-end re-initialises its ring memory on restart
        if (packed) h.Setup.DeviceEvent.Ref<ushort>(2) = 0;
        else h.Setup.Used.Ref<ushort>(0) = 0;
        Assert.Null(h.Queue.SetBase(b));
        Assert.Null(h.Queue.Start(h.Guest));
        if (packed) Assert.Equal(1, ((DriverPackedRing)h.Driver).DeviceEventFlags);
        else Assert.Equal(1, h.Split.UsedFlags & 1);
    }

    [Fact]
    public void SetNotificationsEnabledWritesAvailEventWithEventIdx()
    {
        using var h = new RingHarness(packed: false, eventIdx: true);
        ulong buf = h.Memory.Allocate(64);
        for (int i = 0; i < 5; i++)
        {
            h.Driver.Add(new DriverBuffer(buf, 64, false));
            h.PopOneAndComplete();
        }
        h.Queue.SetNotificationsEnabled(false);
        h.Queue.SetNotificationsEnabled(true);
        Assert.Equal(5, h.Split.AvailEvent);
        Assert.Equal(0, h.Split.UsedFlags & 1);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SetNotificationsEnabledWritesPackedDeviceEvent(bool eventIdx)
    {
        using var h = new RingHarness(packed: true, eventIdx: eventIdx);
        h.Queue.SetNotificationsEnabled(false);
        Assert.Equal(1, h.Packed.DeviceEventFlags); // disable
        h.Queue.SetNotificationsEnabled(true);
        Assert.Equal(eventIdx ? 2 : 0, h.Packed.DeviceEventFlags); // desc (event idx) or enable
        if (eventIdx)
        {
            // off_wrap names the next slot the device will read, with the driver's wrap counter
            ushort offWrap = BinaryPrimitives.ReadUInt16LittleEndian(h.Setup.DeviceEvent.AsSpan());
            Assert.Equal(0x8000, offWrap);
        }
    }

    [Theory]
    [InlineData(false, 70, 70u)]
    // packed: avail index and wrap in the low half, the used ones (the same once drained) in the high half
    [InlineData(true, 70, 6u | (6u << 16))] // 70 slots in a ring of 64: index 6, wrap counter flipped to 0
    [InlineData(true, 10, (10u | 0x8000) * 0x10001)]
    public void StopReportsTheBaseAfterNPops(bool packed, int pops, uint expected)
    {
        using var h = new RingHarness(packed, size: 64);
        ulong buf = h.Memory.Allocate(64);
        for (int i = 0; i < pops; i++)
        {
            h.Driver.Add(new DriverBuffer(buf, 64, false));
            h.PopOneAndComplete();
            h.Driver.WaitUsed(TimeSpan.FromSeconds(1));
        }
        Assert.Equal(expected, h.Queue.Stop());
    }

    [Fact]
    public void ARestartedSplitRingResumesAtTheReportedBase()
    {
        using var h = new RingHarness(packed: false, size: 64);
        ulong buf = h.Memory.Allocate(64);
        for (int i = 0; i < 3; i++)
        {
            h.Driver.Add(new DriverBuffer(buf, 64, false));
            h.PopOneAndComplete();
        }
        uint b = h.Queue.Stop();
        Assert.Null(h.Queue.SetBase(b));
        Assert.Null(h.Queue.Start(h.Guest));
        ushort id = h.Driver.Add(new DriverBuffer(buf, 64, false));
        Assert.Equal(id, h.PopOneAndComplete().Id);
    }
}

public sealed class RingBadChainTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void APopOfOnlyBadChainsReturnsThemWithoutAFlush(bool packed)
    {
        // regression: bad chains were only staged, so an application that flushes after real work left the
        // guest waiting for those buffers forever
        using var h = new RingHarness(packed);
        if (packed) ((DriverPackedRing)h.Driver).AddRaw(0xdead_0000_0000, 64, DriverRing.Write, 3);
        else
        {
            h.Driver.WriteDescriptor(0, 0xdead_0000_0000, 64, DriverRing.Write, 0);
            h.Split.Publish(0);
        }
        Assert.Equal(0, h.Pop());
        Assert.Equal(1, h.Queue.BadChains);
        Assert.True(h.Driver.TryGetUsed(out var u));
        Assert.Equal(new UsedElement(packed ? (ushort)3 : (ushort)0, 0), u);
    }
}

/// <summary>Event-index suppression measured from the last interrupt check, as Linux's and DPDK's vring_need_event use it.</summary>
public sealed class EventIdxSuppressionTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void RestartedRingWithTheEventBehindItInterruptsOnItsFirstCompletion(bool packed)
    {
        using var h = new RingHarness(packed, eventIdx: true);
        ulong buf = h.Memory.Allocate(64);
        // the event sits at slot 0, which the used index has already passed once two completions are out
        if (packed) h.Packed.SetDriverEvent(2, 0x8000);
        else h.Split.SetUsedEvent(0);
        for (int i = 0; i < 2; i++)
        {
            h.Driver.Add(new DriverBuffer(buf, 64, true));
            h.PopOneAndComplete();
        }
        int before = h.Interrupts;
        // the ring stops and starts again (GET_VRING_BASE, then SET_VRING_BASE and a kick): the driver's event is
        // stale, and the first completion must interrupt anyway, or a driver that re-armed meanwhile waits forever
        h.Queue.Stop();
        Assert.Null(h.Queue.Start(h.Guest));
        h.Driver.Add(new DriverBuffer(buf, 64, true));
        h.PopOneAndComplete();
        Assert.Equal(before + 1, h.Interrupts);
        // afterwards the event decides again: still behind, so no interrupt
        h.Driver.Add(new DriverBuffer(buf, 64, true));
        h.PopOneAndComplete();
        Assert.Equal(before + 1, h.Interrupts);
    }

    [Fact]
    public void UsedEventMovedBackwardsBehindTheLastCheckInterruptsWhenCrossed()
    {
        using var h = new RingHarness(packed: false, eventIdx: true);
        ulong buf = h.Memory.Allocate(64);
        h.Split.SetUsedEvent(0);
        h.Driver.Add(new DriverBuffer(buf, 64, true));
        h.PopOneAndComplete(); // 0 -> 1: the first check interrupts
        h.Split.SetUsedEvent(40); // far ahead: nothing for a while
        for (int i = 0; i < 3; i++)
        {
            h.Driver.Add(new DriverBuffer(buf, 64, true));
            h.PopOneAndComplete();
        }
        Assert.Equal(1, h.Interrupts);
        // the driver moves its event back to 4 (the used index is 4): crossing it on the next completion interrupts
        h.Split.SetUsedEvent(4);
        h.Driver.Add(new DriverBuffer(buf, 64, true));
        h.PopOneAndComplete();
        Assert.Equal(2, h.Interrupts);
    }
}
