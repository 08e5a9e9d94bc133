using System.Runtime.InteropServices;

namespace Vhost.Interop;

internal static unsafe partial class Libc
{
    public const int O_RDONLY = 0;
    public const int O_RDWR = 2;
    public const int O_CREAT = 0x40;
    public const int SEEK_END = 2;
    public const int EFD_SEMAPHORE = 1;
    public const int FALLOC_FL_KEEP_SIZE = 0x01;
    public const int FALLOC_FL_PUNCH_HOLE = 0x02;
    public const int FALLOC_FL_ZERO_RANGE = 0x10;
    public const int EIO = 5;
    public const int EOPNOTSUPP = 95;

    [LibraryImport(C, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags, int mode);
    [LibraryImport(C, SetLastError = true)] public static partial long lseek(SafeFd fd, long offset, int whence);
    [LibraryImport(C, SetLastError = true)] public static partial int fallocate(SafeFd fd, int mode, long offset, long len);
}

/// <summary>
/// A disk image or block device opened for positioned I/O straight into guest memory windows.
/// Every method returns 0 or an errno instead of throwing: it runs on the data path, where a failed
/// request becomes a status byte, not an exception.
/// </summary>
internal sealed unsafe class BlockFile : IDisposable
{
    private readonly SafeFd _fd;

    private BlockFile(SafeFd fd, long size, bool blockDevice, bool readOnly)
    {
        _fd = fd;
        Size = size;
        IsBlockDevice = blockDevice;
        IsReadOnly = readOnly;
    }

    public long Size { get; }

    public bool IsBlockDevice { get; }

    public bool IsReadOnly { get; }

    /// <summary>Opens (or with <paramref name="createSize"/> creates and sizes) an image or block device.</summary>
    public static BlockFile Open(string path, bool readOnly, long? createSize = null)
    {
        int flags = (readOnly ? Libc.O_RDONLY : Libc.O_RDWR) | Libc.O_CLOEXEC | (createSize != null ? Libc.O_CREAT : 0);
        int fd = Libc.open(path, flags, 0x1a4 /* 0644 */);
        if (fd < 0) throw new NativeException($"open {path}", Libc.Errno);
        var h = new SafeFd(fd);
        try
        {
            if (!FileDescriptors.TryStat(h, out var info)) throw new NativeException($"fstat {path}", Libc.Errno);
            if (!info.IsRegular && !info.IsBlockDevice) throw new IOException($"{path} is neither a regular file nor a block device");
            if (createSize is { } want && info.IsRegular && info.Size < want) FileDescriptors.Truncate(h, want);
            // st_size is 0 for block devices; the end offset is their size
            long size = Libc.lseek(h, 0, Libc.SEEK_END);
            if (size < 0) throw new NativeException($"lseek {path}", Libc.Errno);
            return new BlockFile(h, size, info.IsBlockDevice, readOnly);
        }
        catch
        {
            h.Dispose();
            throw;
        }
    }

    /// <summary>Fills <paramref name="destination"/> from <paramref name="offset"/>; reads past the end give zeros.</summary>
    public int ReadAt(NativeWindow destination, long offset)
    {
        nuint done = 0;
        byte* p = (byte*)destination.Address;
        while (done < destination.Length)
        {
            nint r = Libc.pread(_fd, p + done, destination.Length - done, offset + (long)done);
            if (r < 0)
            {
                int e = Libc.Errno;
                if (e == Libc.EINTR) continue;
                return e;
            }
            if (r == 0)
            {
                new Span<byte>(p + done, checked((int)(destination.Length - done))).Clear();
                break;
            }
            done += (nuint)r;
        }
        return 0;
    }

    public int WriteAt(NativeWindow source, long offset)
    {
        nuint done = 0;
        byte* p = (byte*)source.Address;
        while (done < source.Length)
        {
            nint r = Libc.pwrite(_fd, p + done, source.Length - done, offset + (long)done);
            if (r < 0)
            {
                int e = Libc.Errno;
                if (e == Libc.EINTR) continue;
                return e;
            }
            if (r == 0) return Libc.EIO;
            done += (nuint)r;
        }
        return 0;
    }

    /// <summary>fdatasync: what FLUSH promises the guest.</summary>
    public int DataSync() => Libc.fdatasync(_fd) == 0 ? 0 : Libc.Errno;

    /// <summary>Deallocates a range (reads give zeros afterwards); EOPNOTSUPP where the file system cannot.</summary>
    public int PunchHole(long offset, long length) =>
        Libc.fallocate(_fd, Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, offset, length) == 0 ? 0 : Libc.Errno;

    /// <summary>Zeroes a range without writing zeros, if the file system can; EOPNOTSUPP otherwise.</summary>
    public int ZeroRange(long offset, long length) =>
        Libc.fallocate(_fd, Libc.FALLOC_FL_ZERO_RANGE | Libc.FALLOC_FL_KEEP_SIZE, offset, length) == 0 ? 0 : Libc.Errno;

    public void Dispose() => _fd.Dispose();
}

/// <summary>eventfd in semaphore mode: each wait takes one unit, so N posts wake N waiters once each.</summary>
internal static unsafe class EventSemaphore
{
    public static SafeFd Create()
    {
        int fd = Libc.eventfd(0, Libc.EFD_CLOEXEC | Libc.EFD_SEMAPHORE);
        if (fd < 0) throw new NativeException("eventfd", Libc.Errno);
        return new SafeFd(fd);
    }

    public static void Post(SafeFd fd, ulong count)
    {
        _ = Libc.write(fd, &count, 8);
    }

    /// <summary>Blocks until a unit is available and takes it; false if the read failed.</summary>
    public static bool Wait(SafeFd fd)
    {
        ulong v;
        while (true)
        {
            if (Libc.read(fd, &v, 8) == 8) return true;
            if (Libc.Errno != Libc.EINTR) return false;
        }
    }
}
