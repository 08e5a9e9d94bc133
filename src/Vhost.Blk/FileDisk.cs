using Vhost.Interop;

namespace Vhost.Blk;

/// <summary>A raw image file or a block device, with pread/pwrite and fdatasync for FLUSH.</summary>
public sealed class FileDisk : IBlockStorage
{
    private readonly BlockFile _file;
    private readonly NativeBuffer _zeros;

    /// <param name="createSize">Create the image (or grow it) to this size when given.</param>
    /// <summary>Opens the image file or block device at <paramref name="path"/>; throws <see cref="IOException"/> when it cannot be opened or is smaller than a sector.</summary>
    /// <param name="path">The raw image or block device.</param>
    /// <param name="readOnly">Open it read-only; every write request is then refused.</param>
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

    /// <summary>The size in bytes, the file's rounded down to a whole sector.</summary>
    public long Capacity { get; }

    /// <summary>Whether the file was opened read-only.</summary>
    public bool IsReadOnly { get; }

    /// <summary>Always true: file I/O blocks, so it runs on the I/O threads.</summary>
    public bool IsSlow => true;

    /// <summary>The file's name, cut to the 20 bytes GET_ID has.</summary>
    public string Serial { get; }

    /// <summary>Whether the path is a block device rather than a regular file.</summary>
    public bool IsBlockDevice => _file.IsBlockDevice;

    /// <summary>Reads the window's length from <paramref name="offset"/> with pread; 0 or an errno (EINVAL outside the disk).</summary>
    public int Read(long offset, NativeWindow destination) =>
        BlkWire.InRange(offset, (long)destination.Length, Capacity) ? _file.ReadAt(destination, offset) : BlkWire.EInval;

    // the file is never written past the disk's capacity, whatever a caller asks
    /// <summary>Writes the window at <paramref name="offset"/> with pwrite; 0 or an errno (EINVAL outside the disk).</summary>
    public int Write(long offset, NativeWindow source) =>
        BlkWire.InRange(offset, (long)source.Length, Capacity) ? _file.WriteAt(source, offset) : BlkWire.EInval;

    /// <summary>fdatasync: every completed write reaches the disk.</summary>
    public int Flush() => _file.DataSync();

    /// <summary>Punches a hole where the file system can; where it cannot, the data stays, which a discard allows.</summary>
    public int Discard(long offset, long length)
    {
        if (!BlkWire.InRange(offset, length, Capacity)) return BlkWire.EInval;
        // discard is a hint: a file system that cannot punch holes just keeps the data
        int e = _file.PunchHole(offset, length);
        return e == 0 || _file.IsBlockDevice || e == 95 /* EOPNOTSUPP */ ? 0 : e;
    }

    /// <summary>Zeroes the range with a hole (when <paramref name="mayUnmap"/>) or fallocate's zero range, else by writing zeros.</summary>
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

    /// <summary>Closes the file.</summary>
    public void Dispose()
    {
        _file.Dispose();
        _zeros.Dispose();
    }
}
