using Vhost.Interop;
using Vhost.Testing.Rings;

namespace Vhost.Blk.Tests;

/// <summary>
/// A guest whose other vCPU rewrites request memory while the back-end works on it. The back-end must read
/// each field once: what it checked is what it applies.
/// </summary>
public sealed class BlkDoubleFetchTests
{
    /// <summary>A RAM disk that runs a hook after each discard or write-zeroes and records what it was asked.</summary>
    private sealed class HookedDisk(long capacity) : IBlockStorage
    {
        private readonly MemoryDisk _disk = new(capacity, "hooked");
        public readonly List<(long Offset, long Length)> Applied = [];
        public Action? AfterRange;

        public long Capacity => _disk.Capacity;
        public bool IsReadOnly => false;
        public bool IsSlow => false;
        public string Serial => _disk.Serial;
        public int Read(long offset, NativeWindow destination) => _disk.Read(offset, destination);
        public int Write(long offset, NativeWindow source) => _disk.Write(offset, source);
        public int Flush() => 0;
        public int Discard(long offset, long length) => Range(offset, length);
        public int WriteZeroes(long offset, long length, bool mayUnmap) => Range(offset, length);

        private int Range(long offset, long length)
        {
            lock (Applied) Applied.Add((offset, length));
            // an out-of-range call is the bug under test: refuse it here instead of letting MemoryDisk throw
            int e = offset < 0 || length < 0 || offset > Capacity - length ? 22 : _disk.WriteZeroes(offset, length, true);
            AfterRange?.Invoke();
            return e;
        }

        public void Dispose() => _disk.Dispose();
    }

    [Theory]
    [InlineData(BlkRequestType.Discard, false)]
    [InlineData(BlkRequestType.WriteZeroes, false)]
    [InlineData(BlkRequestType.Discard, true)]
    [InlineData(BlkRequestType.WriteZeroes, true)]
    public void RangeRewrittenAfterTheCheckIsAppliedAsChecked(BlkRequestType type, bool packed)
    {
        const long capacity = 1 << 20;
        var disk = new HookedDisk(capacity);
        using var h = new BlkHarness(packed: packed, storage: disk);
        ulong hdr = h.Header(type, 0), ranges = h.Alloc(32), s = h.Alloc(1);
        BlkHarness.Ranges((0, 1, 0), (8, 1, 0)).CopyTo(h.Span(ranges, 32));
        // after the first range is applied, the guest moves the second one far past the end of the disk
        disk.AfterRange = () =>
        {
            disk.AfterRange = null;
            BlkHarness.Ranges((ulong.MaxValue / 1024, 16, 0)).CopyTo(h.Span(ranges + 16, 16));
        };
        h.Run(new DriverBuffer(hdr, 16, false), new DriverBuffer(ranges, 32, false), new DriverBuffer(s, 1, true));

        Assert.Equal(0, h.Span(s, 1)[0]);
        lock (disk.Applied) Assert.Equal([(0L, 512L), (8L * 512, 512L)], disk.Applied);
        h.AssertStillServes();
    }
}

/// <summary>The storages bound every call themselves, whatever the caller checked: an error, never a throw or a file grown.</summary>
public sealed class StorageBoundsTests
{
    [Fact]
    public void MemoryAndFileDisksRefuseRangesPastTheirEnd()
    {
        string path = Path.Combine(Path.GetTempPath(), $"vhost-bounds-{Guid.NewGuid():N}.img");
        try
        {
            using var buffer = new NativeBuffer(4096);
            using var mem = new MemoryDisk(1 << 20);
            using (var file = new FileDisk(path, createSize: 1 << 20))
            {
                foreach (IBlockStorage d in (IBlockStorage[])[mem, file])
                {
                    Assert.Equal(0, d.Write((1 << 20) - 4096, buffer.Window));
                    Assert.Equal(22, d.Write((1 << 20) - 512, buffer.Window));
                    Assert.Equal(22, d.Read(long.MaxValue - 100, buffer.Window));
                    Assert.Equal(22, d.Read(-512, buffer.Window));
                    Assert.Equal(22, d.Discard(1 << 20, 512));
                    Assert.Equal(22, d.WriteZeroes(512, long.MaxValue, false));
                    Assert.Equal(22, d.WriteZeroes(long.MaxValue / 512 * 512, 1 << 20, true));
                }
            }
            Assert.Equal(1 << 20, new FileInfo(path).Length);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
