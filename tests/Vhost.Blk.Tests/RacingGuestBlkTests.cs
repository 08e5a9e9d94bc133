using System.Buffers.Binary;
using Vhost.Interop;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;

namespace Vhost.Blk.Tests;

/// <summary>
/// A second guest vCPU (<see cref="GuestRacer"/>) flips one field the blk back-end reads from guest memory between a
/// good and a bad value, as fast as it can, while requests flow: every request is served as the good value asks or
/// refused, the storage is never called with the bad value, and a second device keeps working. Each bad value is one
/// the checks refuse, so a storage call with it is a value checked from one read and used from another.
/// </summary>
public sealed class RacingGuestBlkTests
{
    private const long Capacity = 1 << 20;
    private const ulong CapacitySectors = Capacity / 512;
    /// <summary>Requests per test, in batches of <see cref="Batch"/> on one kick.</summary>
    private const int Requests = 3072, Batch = 32;

    /// <summary>A RAM disk that records every call, and refuses (not throws on) a range past its end: that call is the bug under test.</summary>
    private sealed class RecordingDisk(long capacity, bool readOnly = false) : IBlockStorage
    {
        private readonly MemoryDisk _disk = new(capacity, "racing");
        public readonly List<(char Op, long Offset, long Length, bool MayUnmap)> Calls = [];

        public long Capacity => _disk.Capacity;
        public bool IsReadOnly => readOnly;
        public bool IsSlow => false;
        public string Serial => _disk.Serial;
        public int Read(long offset, NativeWindow destination) => Record('R', offset, (long)destination.Length, false) ? _disk.Read(offset, destination) : 22;
        public int Write(long offset, NativeWindow source) => Record('W', offset, (long)source.Length, false) ? _disk.Write(offset, source) : 22;
        public int Flush() => 0;
        public int Discard(long offset, long length) => Record('D', offset, length, false) ? _disk.Discard(offset, length) : 22;
        public int WriteZeroes(long offset, long length, bool mayUnmap) => Record('Z', offset, length, mayUnmap) ? _disk.WriteZeroes(offset, length, mayUnmap) : 22;

        private bool Record(char op, long offset, long length, bool mayUnmap)
        {
            lock (Calls) Calls.Add((op, offset, length, mayUnmap));
            return offset >= 0 && length >= 0 && offset <= Capacity - length;
        }

        public (char Op, long Offset, long Length, bool MayUnmap)[] Snapshot()
        {
            lock (Calls) return [.. Calls];
        }

        public void Dispose() => _disk.Dispose();
    }

    /// <summary>
    /// Runs <see cref="Requests"/> copies of one request (shared header, payload and data buffers, a status byte each)
    /// while the racer flips the field; returns the statuses seen. The second device does a write and read between batches.
    /// </summary>
    private static Dictionary<byte, int> Race(BlkHarness h, BlkHarness other, GuestRacer racer, ulong gpa, ulong good, ulong bad, DriverBuffer[] chain)
    {
        var counts = new Dictionary<byte, int>();
        var status = new ulong[Batch];
        for (int i = 0; i < Batch; i++) status[i] = h.Alloc(1);
        racer.Race(gpa, good, bad);
        var buffers = new DriverBuffer[chain.Length + 1];
        chain.CopyTo(buffers, 0);
        // at least Requests, and on until both outcomes were seen: a racer descheduled on a loaded machine holds one value for a while
        for (int done = 0; done < 16 * Requests && (done < Requests || counts.Count < 2); done += Batch)
        {
            var ids = new Dictionary<ushort, int>();
            for (int i = 0; i < Batch; i++)
            {
                h.Span(status[i], 1)[0] = 0xff;
                buffers[^1] = new DriverBuffer(status[i], 1, true);
                Assert.True(ids.TryAdd(h.Rings[0].Add(buffers), i));
            }
            h.Setup[0].Kick();
            for (int k = 0; k < Batch; k++)
            {
                var u = h.Rings[0].WaitUsed(BlkHarness.T);
                // each request completes exactly once, with a status byte written
                Assert.True(ids.Remove(u.Id, out int i), $"used id {u.Id} not in flight");
                byte s = h.Span(status[i], 1)[0];
                Assert.NotEqual(0xff, s);
                counts[s] = counts.GetValueOrDefault(s) + 1;
            }
            if (done % (8 * Batch) == 0) other.AssertStillServes();
        }
        racer.Hold();
        Assert.False(racer.Displaced);
        Assert.True(racer.Flips > 0);
        return counts;
    }

    private static void AssertBothWays(Dictionary<byte, int> counts, byte refusal)
    {
        Assert.All(counts.Keys, s => Assert.True(s == 0 || s == refusal, $"status {s}"));
        Assert.True(counts.GetValueOrDefault((byte)0) > 0 && counts.GetValueOrDefault(refusal) > 0,
            $"the race never went both ways: {string.Join(", ", counts.Select(c => $"{c.Value} x status {c.Key}"))}");
    }

    /// <summary>The header's sector flips between a good one and one whose 4 KiB run past the end: served at the good sector or refused.</summary>
    [Theory]
    [InlineData(false, BlkRequestType.Out)]
    [InlineData(false, BlkRequestType.In)]
    [InlineData(true, BlkRequestType.Out)]
    [InlineData(true, BlkRequestType.In)]
    public void HeaderSectorFlippedServesTheGoodSectorOrRefuses(bool packed, BlkRequestType type)
    {
        var disk = new RecordingDisk(Capacity);
        using var h = new BlkHarness(packed: packed, storage: disk);
        using var other = new BlkHarness(packed: packed);
        using var racer = new GuestRacer(h.Memory, 8);
        ulong hdr = h.Header(type, 8), data = h.Alloc(4096);
        bool write = type == BlkRequestType.Out;
        var counts = Race(h, other, racer, hdr + 8, 8, CapacitySectors - 4,
            [new DriverBuffer(hdr, 16, false), new DriverBuffer(data, 4096, !write)]);
        AssertBothWays(counts, 1);
        Assert.All(disk.Snapshot(), c => Assert.Equal((write ? 'W' : 'R', 8L * 512, 4096L, false), c));
        h.AssertStillServes();
        other.AssertStillServes();
    }

    /// <summary>On a read-only device the type flips between IN and OUT: reads are served, writes refused, nothing written.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void HeaderTypeFlippedOnAReadOnlyDeviceNeverWrites(bool packed)
    {
        var disk = new RecordingDisk(Capacity, readOnly: true);
        using var h = new BlkHarness(packed: packed, storage: disk, readOnly: true);
        using var other = new BlkHarness(packed: packed);
        using var racer = new GuestRacer(h.Memory, 4);
        ulong hdr = h.Header(BlkRequestType.In, 8), data = h.Alloc(4096);
        var counts = Race(h, other, racer, hdr, (ulong)BlkRequestType.In, (ulong)BlkRequestType.Out,
            [new DriverBuffer(hdr, 16, false), new DriverBuffer(data, 4096, true)]);
        AssertBothWays(counts, 1);
        Assert.All(disk.Snapshot(), c => Assert.Equal(('R', 8L * 512, 4096L, false), c));
        other.AssertStillServes();
    }

    public enum RangeField
    {
        Sector,
        NumSectors,
        Flags,
    }

    /// <summary>
    /// One discard or write-zeroes range (sector 16, 8 sectors) with one field flipping to a value the checks refuse: the
    /// storage sees exactly the good range, or nothing.
    /// </summary>
    [Theory]
    [InlineData(false, BlkRequestType.WriteZeroes, RangeField.Sector)]
    [InlineData(false, BlkRequestType.WriteZeroes, RangeField.NumSectors)]
    [InlineData(false, BlkRequestType.WriteZeroes, RangeField.Flags)]
    [InlineData(false, BlkRequestType.Discard, RangeField.Sector)]
    [InlineData(false, BlkRequestType.Discard, RangeField.Flags)]
    [InlineData(true, BlkRequestType.WriteZeroes, RangeField.Sector)]
    [InlineData(true, BlkRequestType.WriteZeroes, RangeField.NumSectors)]
    [InlineData(true, BlkRequestType.Discard, RangeField.Flags)]
    public void RangeFieldFlippedAppliesTheGoodRangeOrRefuses(bool packed, BlkRequestType type, RangeField field)
    {
        var disk = new RecordingDisk(Capacity);
        using var h = new BlkHarness(packed: packed, storage: disk);
        using var other = new BlkHarness(packed: packed);
        ulong hdr = h.Header(type, 0), ranges = h.Alloc(16);
        BlkHarness.Ranges((16, 8, 0)).CopyTo(h.Span(ranges, 16));
        // sector: 8 sectors from the last one run past the end; count: past the end too; flags: an undefined bit
        // with UNMAP (write-zeroes would unmap), UNMAP alone for discard (no flags allowed there)
        var (offset, width, good, bad, refusal) = field switch
        {
            RangeField.Sector => (0, 8, 16UL, CapacitySectors - 1, (byte)1),
            RangeField.NumSectors => (8, 4, 8UL, CapacitySectors, (byte)1),
            _ => (12, 4, 0UL, type == BlkRequestType.Discard ? 1UL : 3UL, (byte)2),
        };
        using var racer = new GuestRacer(h.Memory, width);
        var counts = Race(h, other, racer, ranges + (ulong)offset, good, bad,
            [new DriverBuffer(hdr, 16, false), new DriverBuffer(ranges, 16, false)]);
        AssertBothWays(counts, refusal);
        char op = type == BlkRequestType.Discard ? 'D' : 'Z';
        Assert.All(disk.Snapshot(), c => Assert.Equal((op, 16L * 512, 8L * 512, false), c));
        Assert.Equal(counts[0], disk.Snapshot().Length);
        h.AssertStillServes();
        other.AssertStillServes();
    }
}
