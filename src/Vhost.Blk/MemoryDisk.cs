using Vhost.Interop;

namespace Vhost.Blk;

/// <summary>A RAM disk in a memfd mapping: fast, shared by every queue, gone with the process.</summary>
public sealed class MemoryDisk : IBlockStorage
{
    private const int Chunk = 1 << 30;
    private readonly SafeFd _fd;
    private readonly MemoryMapping _map;

    public MemoryDisk(long capacity, string serial = "vhost-mem")
    {
        if (capacity <= 0 || capacity % BlkWire.SectorSize != 0)
            throw new ArgumentOutOfRangeException(nameof(capacity), "capacity must be a positive multiple of 512");
        _fd = FileDescriptors.CreateMemFd("vhost-blk", capacity);
        _map = MemoryMapping.Map(_fd, (nuint)capacity);
        Capacity = capacity;
        Serial = serial;
    }

    public long Capacity { get; }

    public bool IsReadOnly { get; init; }

    public bool IsSlow => false;

    public string Serial { get; }

    /// <summary>The disk's bytes, for tests and tools that check content.</summary>
    public NativeWindow Content => _map.Window;

    public int Read(long offset, NativeWindow destination)
    {
        if (!BlkWire.InRange(offset, (long)destination.Length, Capacity)) return BlkWire.EInval;
        Copy(_map.Window.Slice((nuint)offset, destination.Length), destination);
        return 0;
    }

    public int Write(long offset, NativeWindow source)
    {
        if (!BlkWire.InRange(offset, (long)source.Length, Capacity)) return BlkWire.EInval;
        Copy(source, _map.Window.Slice((nuint)offset, source.Length));
        return 0;
    }

    public int Flush() => 0;

    public int Discard(long offset, long length) => WriteZeroes(offset, length, true);

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

    public void Dispose()
    {
        _map.Dispose();
        _fd.Dispose();
    }
}
