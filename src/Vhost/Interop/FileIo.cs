using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Vhost.Interop;

/// <summary>The two file operations .NET's RandomAccess lacks: fdatasync (so a guest FLUSH reaches the disk)
/// and the size of a block device (whose st_size is 0).</summary>
public static unsafe partial class FileIo
{
    private const ulong BLKGETSIZE64 = 0x80081272;

    [LibraryImport("libc", SetLastError = true)] private static partial int fdatasync(SafeFileHandle fd);
    [LibraryImport("libc", SetLastError = true)] private static partial int ioctl(SafeFileHandle fd, ulong request, ulong* arg);

    public static void DataSync(SafeFileHandle fd)
    {
        int r;
        do r = fdatasync(fd);
        while (r < 0 && Libc.Errno == Libc.EINTR);
        if (r < 0) throw new NativeException("fdatasync", Libc.Errno);
    }

    public static long BlockDeviceSize(SafeFileHandle fd)
    {
        ulong size = 0;
        return ioctl(fd, BLKGETSIZE64, &size) == 0 ? (long)size : 0;
    }
}
