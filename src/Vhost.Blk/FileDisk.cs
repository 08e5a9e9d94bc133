using Vhost.Interop;

namespace Vhost.Blk;

/// <summary>A raw image file or a block device, with pread/pwrite and fdatasync for FLUSH.</summary>
public sealed class FileDisk : IBlockStorage
{
    private readonly BlockFile _file;
    private readonly NativeBuffer _zeros;

    /// <param name="createSize">Create the image (or grow it) to this size when given.</param>
    public FileDisk(string path, bool readOnly = false, long? createSize = null)
    {
        _file = BlockFile.Open(path, readOnly, createSize);
        Capacity = _file.Size & ~(long)(BlkWire.SectorSize - 1);
        if (Capacity == 0) throw new IOException($"{path} is smaller than one sector");
        IsReadOnly = readOnly;
        _zeros = new NativeBuffer(64 << 10);
        string name = Path.GetFileName(path);
        Serial = name.Length > BlkWire.IdBytes ? name[..BlkWire.IdBytes] : name;
    }

    public long Capacity { get; }

    public bool IsReadOnly { get; }

    public bool IsSlow => true;

    public string Serial { get; }

    public bool IsBlockDevice => _file.IsBlockDevice;

    public int Read(long offset, NativeWindow destination) =>
        BlkWire.InRange(offset, (long)destination.Length, Capacity) ? _file.ReadAt(destination, offset) : BlkWire.EInval;

    // the file is never written past the disk's capacity, whatever a caller asks
    public int Write(long offset, NativeWindow source) =>
        BlkWire.InRange(offset, (long)source.Length, Capacity) ? _file.WriteAt(source, offset) : BlkWire.EInval;

    public int Flush() => _file.DataSync();

    public int Discard(long offset, long length)
    {
        if (!BlkWire.InRange(offset, length, Capacity)) return BlkWire.EInval;
        // discard is a hint: a file system that cannot punch holes just keeps the data
        int e = _file.PunchHole(offset, length);
        return e == 0 || _file.IsBlockDevice || e == 95 /* EOPNOTSUPP */ ? 0 : e;
    }

    public int WriteZeroes(long offset, long length, bool mayUnmap)
    {
        if (!BlkWire.InRange(offset, length, Capacity)) return BlkWire.EInval;
        int e = mayUnmap ? _file.PunchHole(offset, length) : _file.ZeroRange(offset, length);
        if (e == 0) return 0;
        var zeros = _zeros.Window;
        while (length > 0)
        {
            long n = Math.Min(length, (long)zeros.Length);
            e = _file.WriteAt(zeros.Slice(0, (nuint)n), offset);
            if (e != 0) return e;
            offset += n;
            length -= n;
        }
        return 0;
    }

    public void Dispose()
    {
        _file.Dispose();
        _zeros.Dispose();
    }
}
