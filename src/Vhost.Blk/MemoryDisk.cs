using Vhost.Interop;

namespace Vhost.Blk;

/// <summary>A RAM disk in a memfd mapping: fast, shared by every queue, gone with the process.</summary>
public sealed class MemoryDisk : IBlockStorage
{
    private const int Chunk = 1 << 30;
    private readonly SafeFd _fd;
    private readonly MemoryMapping _map;

    /// <summary>A zeroed disk of <paramref name="capacity"/> bytes (a positive multiple of 512) that answers GET_ID with <paramref name="serial"/>.</summary>
    public MemoryDisk(long capacity, string serial = "vhost-mem")
    {
        if (capacity <= 0 || capacity % BlkWire.SectorSize != 0)
            throw new ArgumentOutOfRangeException(nameof(capacity), "capacity must be a positive multiple of 512");
        _fd = FileDescriptors.CreateMemFd("vhost-blk", capacity);
        _map = MemoryMapping.Map(_fd, (nuint)capacity);
        Capacity = capacity;
        Serial = serial;
    }

    /// <summary>The size in bytes.</summary>
    public long Capacity { get; }

    /// <summary>Whether writes are refused; false unless set.</summary>
    public bool IsReadOnly { get; init; }

    /// <summary>Always false: a copy in memory runs on the queue's thread.</summary>
    public bool IsSlow => false;

    /// <summary>What GET_ID answers.</summary>
    public string Serial { get; }

    /// <summary>The disk's bytes, for tests and tools that check content.</summary>
    public NativeWindow Content => _map.Window;

    /// <summary>Copies from the disk into <paramref name="destination"/>; 0, or EINVAL outside the disk.</summary>
    public int Read(long offset, NativeWindow destination)
    {
        if (!BlkWire.InRange(offset, (long)destination.Length, Capacity)) return BlkWire.EInval;
        Copy(_map.Window.Slice((nuint)offset, destination.Length), destination);
        return 0;
    }

    /// <summary>Copies <paramref name="source"/> into the disk; 0, or EINVAL outside the disk.</summary>
    public int Write(long offset, NativeWindow source)
    {
        if (!BlkWire.InRange(offset, (long)source.Length, Capacity)) return BlkWire.EInval;
        Copy(source, _map.Window.Slice((nuint)offset, source.Length));
        return 0;
    }

    /// <summary>Nothing to do: memory has no cache to flush.</summary>
    public int Flush() => 0;

    /// <summary>Zeroes the range.</summary>
    public int Discard(long offset, long length) => WriteZeroes(offset, length, true);

    /// <summary>Zeroes the range.</summary>
    public int WriteZeroes(long offset, long length, bool mayUnmap)
    {
        if (!BlkWire.InRange(offset, length, Capacity)) return BlkWire.EInval;
        var w = _map.Window.Slice((nuint)offset, (nuint)length);
        for (nuint at = 0; at < w.Length; at += Chunk)
            w.Span(at, (int)Math.Min(Chunk, w.Length - at)).Clear();
        return 0;
    }

    private static void Copy(NativeWindow from, NativeWindow to)
    {
        for (nuint at = 0; at < from.Length; at += Chunk)
        {
            int n = (int)Math.Min(Chunk, from.Length - at);
            from.Span(at, n).CopyTo(to.Span(at, n));
        }
    }

    /// <summary>Unmaps and closes the memfd; the content is gone.</summary>
    public void Dispose()
    {
        _map.Dispose();
        _fd.Dispose();
    }
}
