using System.Buffers.Binary;
using Vhost.Device;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;

namespace Vhost.Tests.Hostile;

/// <summary>
/// Bad descriptor chains on a running hostile device. A chain that breaks a rule is returned to the guest
/// with length 0, counted, logged once, and the queue goes on; ring-level corruption stops the device.
/// </summary>
[Collection(HostileCollection.Name)]
public sealed class ChainTests
{
    private const ushort Next = DriverRing.Next, Write = DriverRing.Write, Indirect = DriverRing.Indirect;

    /// <summary>
    /// <paramref name="write"/> makes one bad chain available and returns its id. The case checks it comes
    /// back unused, the reason, one log line, that the queue still moves a good chain, and the usual rest.
    /// </summary>
    private static void BadChain(bool packed, string phrase, Func<DriverRing, FrontEndMemory, ushort> write, int segments = 256, ulong memorySize = 16 << 20)
    {
        using var s = new Scene();
        var (fe, setup, dev, ring) = s.BringUp(packed, memorySize: memorySize);
        using (fe)
        using (setup)
        {
            ushort id = write(ring, setup.Memory);
            Assert.Equal(0, Scene.PopAndFlush(dev, new Vhost.Rings.BufferSegment[segments]));
            var q = dev.Queue(0);
            Assert.Equal(1, q.BadChains);
            Assert.Contains(phrase, q.LastBadChainReason);
            Assert.Equal(new UsedElement(id, 0), ring.WaitUsed(Scene.T));
            Assert.True(dev.IsRunning);
            ring.Add(new DriverBuffer(setup.Memory.Allocate(64), 64, true));
            Assert.Equal(1, Scene.PopAndFlush(dev));
        }
        s.AssertOneError(phrase);
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    /// <summary>Ring-level corruption: the device must stop and its connection close.</summary>
    private static void Fatal(bool packed, string phrase, Action<DriverRing, FrontEndMemory> write)
    {
        using var s = new Scene();
        var (fe, setup, dev, ring) = s.BringUp(packed);
        using (fe)
        using (setup)
        {
            write(ring, setup.Memory);
            Assert.Equal(0, Scene.PopAndFlush(dev));
            Assert.NotNull(dev.FaultReason);
            Scene.AssertClosed(fe);
        }
        s.AssertOneError(phrase);
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    /// <summary>A raw chain: split descriptors at slots 0.., packed descriptors at the driver's position.</summary>
    private static ushort Raw(DriverRing ring, params (ulong Addr, uint Len, int Flags)[] descs)
    {
        const ushort id = 7;
        if (ring is DriverSplitRing split)
        {
            for (int i = 0; i < descs.Length; i++)
                ring.WriteDescriptor(i, descs[i].Addr, descs[i].Len, (ushort)descs[i].Flags, (ushort)(i + 1));
            split.Publish(0);
            return 0;
        }
        var packed = (DriverPackedRing)ring;
        foreach (var d in descs) packed.AddRaw(d.Addr, d.Len, (ushort)d.Flags, id);
        return id;
    }

    /// <summary>Writes an indirect table in guest memory (entries chained by NEXT for split) and returns its GPA.</summary>
    private static ulong Table(FrontEndMemory mem, bool packed, params (ulong Addr, uint Len, int Flags)[] entries)
    {
        ulong gpa = mem.Allocate((ulong)(16 * entries.Length), 16);
        var t = mem.Span(gpa, 16 * entries.Length);
        for (int i = 0; i < entries.Length; i++)
        {
            var d = t.Slice(16 * i, 16);
            BinaryPrimitives.WriteUInt64LittleEndian(d, entries[i].Addr);
            BinaryPrimitives.WriteUInt32LittleEndian(d[8..], entries[i].Len);
            BinaryPrimitives.WriteUInt16LittleEndian(d[(packed ? 14 : 12)..], (ushort)entries[i].Flags);
            if (!packed) BinaryPrimitives.WriteUInt16LittleEndian(d[14..], (ushort)(i + 1));
        }
        return gpa;
    }

    [Fact]
    public void SplitLoop() =>
        BadChain(false, "chain loops or is longer than the ring", (ring, mem) =>
        {
            ulong b = mem.Allocate(64);
            ring.WriteDescriptor(0, b, 64, Next, 1);
            ring.WriteDescriptor(1, b, 64, Next, 0);
            ((DriverSplitRing)ring).Publish(0);
            return 0;
        });

    [Fact]
    public void SplitIndirectChainLongerThanItsTable() =>
        BadChain(false, "indirect chain loops or is longer than its table", (ring, mem) =>
        {
            ulong b = mem.Allocate(64);
            ulong t = Table(mem, false, (b, 8, Next), (b, 8, Next), (b, 8, Next), (b, 8, Next));
            // the last entry's NEXT points at 4: one past the table, after walking all four
            BinaryPrimitives.WriteUInt16LittleEndian(mem.Span(t + 3 * 16 + 14, 2), 0);
            return Raw(ring, (t, 64, Indirect));
        });

    [Fact]
    public void PackedChainLongerThanTheRingStopsTheDevice() =>
        Fatal(true, "packed descriptor chain does not end within the ring", (ring, mem) =>
        {
            ulong b = mem.Allocate(64);
            for (int i = 0; i < 64; i++) ((DriverPackedRing)ring).AddRaw(b, 8, Next, 1);
        });

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ChainWithMoreBuffersThanTheCallerHasSegments(bool packed) =>
        // regression (packed): the walk stopped at the first buffer without room, so the chain was skipped by
        // 33 slots instead of 40 and its tail was read as new chains
        BadChain(packed, "chain needs more than 32 segments", (ring, mem) =>
        {
            ulong b = mem.Allocate(64);
            var descs = new (ulong, uint, int)[40];
            for (int i = 0; i < descs.Length; i++) descs[i] = (b, 8u, i < descs.Length - 1 ? Next : 0);
            return Raw(ring, descs);
        }, segments: 32);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void IndirectInsideIndirect(bool packed) =>
        BadChain(packed, "indirect descriptor inside an indirect table", (ring, mem) =>
        {
            ulong b = mem.Allocate(64);
            ulong inner = Table(mem, packed, (b, 8, 0));
            ulong outer = Table(mem, packed, (inner, 16, Indirect));
            return Raw(ring, (outer, 16, Indirect));
        });

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void IndirectTableNotAMultipleOf16(bool packed) =>
        BadChain(packed, "indirect table of 24 bytes", (ring, mem) =>
        {
            ulong b = mem.Allocate(64);
            ulong t = Table(mem, packed, (b, 8, 0), (b, 8, 0));
            return Raw(ring, (t, 24, Indirect));
        });

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void IndirectTableOutsideMemory(bool packed) =>
        BadChain(packed, "is not inside one guest memory region", (ring, _) => Raw(ring, (0xdead_0000_0000UL, 32u, Indirect)));

    [Fact]
    public void NextIndexOutOfRange() =>
        BadChain(false, "next index 300 out of range (table of 64)", (ring, mem) =>
        {
            ring.WriteDescriptor(0, mem.Allocate(64), 64, Next, 300);
            ((DriverSplitRing)ring).Publish(0);
            return 0;
        });

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void BufferOutsideMemory(bool packed) =>
        BadChain(packed, "is outside guest memory", (ring, mem) => Raw(ring, (mem.Allocate(8), 8, Next), (0xdead_0000_0000, 64, Write)));

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void BufferStraddlingIntoUnmappedSpace(bool packed) =>
        BadChain(packed, "is outside guest memory", (ring, mem) =>
        {
            var r = mem.Regions[0];
            return Raw(ring, (r.GuestPhysEnd - 8, 64, Write));
        });

    // 2 GiB + 4 KiB of sparse memfd: nothing is touched, so the test costs no memory
    private const ulong HugeMemory = (2UL << 30) + 4096;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void OneBufferLongerThan2GiB(bool packed) =>
        BadChain(packed, "add up to more than", (ring, mem) =>
        {
            var r = mem.Regions[0];
            return Raw(ring, (r.Info.GuestPhysAddr, 0x8000_0000u, 0));
        }, memorySize: HugeMemory);

    /// <summary>Two 2 GiB buffers: their 32-bit byte count would wrap to 0 and pass for an empty chain.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void BuffersAddingUpPast4GiB(bool packed) =>
        BadChain(packed, "add up to more than", (ring, mem) =>
        {
            var r = mem.Regions[0];
            return Raw(ring, (r.Info.GuestPhysAddr, 0x8000_0000u, Next), (r.Info.GuestPhysAddr, 0x8000_0000u, Write));
        }, memorySize: HugeMemory);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ReadableAfterWritable(bool packed) =>
        BadChain(packed, "a readable descriptor follows a writable one", (ring, mem) =>
        {
            ulong b = mem.Allocate(128);
            return Raw(ring, (b, 64, Write | Next), (b + 64, 64, 0));
        });

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ReadableAfterWritableInsideAnIndirectTable(bool packed) =>
        BadChain(packed, "a readable descriptor follows a writable one", (ring, mem) =>
        {
            ulong b = mem.Allocate(128);
            ulong t = Table(mem, packed, (b, 64, Write | (packed ? 0 : Next)), (b + 64, 64, 0));
            return Raw(ring, (t, 32, Indirect));
        });

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ZeroLengthBuffersAreSkippedNotRefused(bool packed)
    {
        using var s = new Scene();
        var (fe, setup, dev, ring) = s.BringUp(packed);
        using (fe)
        using (setup)
        {
            ulong b = setup.Memory.Allocate(64);
            // a zero-length descriptor may even point nowhere: nothing is read or written through it
            Raw(ring, (0xdead_0000_0000UL, 0u, Next), (b, 64u, Write));
            var q = dev.Queue(0);
            var chains = new Vhost.Rings.DescriptorChain[2];
            using (q.AccessLock.EnterScope()) Assert.Equal(1, q.Pop(chains, new Vhost.Rings.BufferSegment[4]));
            Assert.Equal(1, chains[0].SegmentCount);
            Assert.Equal(64u, chains[0].WritableBytes);
            Assert.Equal(0, q.BadChains);
        }
        Assert.Empty(s.Be.Logs.Errors);
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void HeadIndexOutOfRangeIsSkipped()
    {
        using var s = new Scene();
        var (fe, setup, dev, ring) = s.BringUp(false);
        using (fe)
        using (setup)
        {
            ((DriverSplitRing)ring).Publish(500);
            Assert.Equal(0, Scene.PopAndFlush(dev));
            // there is no descriptor 500 to return: the entry is consumed and counted
            Assert.Equal(1, dev.Queue(0).BadChains);
            Assert.True(dev.IsRunning);
            ring.Add(new DriverBuffer(setup.Memory.Allocate(64), 64, true));
            Assert.Equal(1, Scene.PopAndFlush(dev));
        }
        s.AssertOneError("head index 500 out of range (ring of 64)");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void AvailIndexMoreThanARingAheadStopsTheDevice() =>
        Fatal(false, "entries ahead of 0 in a ring of 64", (ring, _) => ((DriverSplitRing)ring).SetAvailIndex(200));
}
