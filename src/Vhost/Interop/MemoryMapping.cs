using System.Numerics;
using Microsoft.Extensions.Logging;

namespace Vhost.Interop;

/// <summary>
/// One mmap of a file descriptor, unmapped on dispose. Shared file mappings are guarded against SIGBUS
/// (<see cref="SigbusGuard"/>): if the file shrinks under the mapping, a touch past its new end reads zeros
/// instead of killing the process, and <see cref="Faulted"/> is raised once, from a timer thread.
/// </summary>
internal sealed unsafe class MemoryMapping : IDisposable
{
    private byte* _address;
    private readonly int _guardSlot;

    private MemoryMapping(byte* address, nuint length, nuint pageSize, bool canShrink, ILogger? logger)
    {
        _address = address;
        Length = length;
        CanShrink = canShrink;
        // a file sealed against shrinking cannot SIGBUS us, so it needs none of the guard's slots
        _guardSlot = canShrink ? SigbusGuard.Add(this, address, length, pageSize, logger) : -1;
    }

    /// <summary>Whether the file could shrink under the mapping (false when it carries F_SEAL_SHRINK).</summary>
    public bool CanShrink { get; }

    public nuint Length { get; }

    public bool IsDisposed => _address == null;

    /// <summary>Whether a fault past the end of the file is turned into <see cref="Faulted"/> (x86-64 Linux).</summary>
    public bool IsGuarded => _guardSlot >= 0;

    /// <summary>Touches of pages the file no longer had, each answered with a zero page.</summary>
    public long LostPageFaults => SigbusGuard.FaultsIn(_guardSlot);

    /// <summary>Raised once, from a timer thread, after the first touch of a page the file no longer has.</summary>
    public Action? Faulted { get; set; }

    internal void OnFaulted() => Faulted?.Invoke();

    /// <summary>The whole mapping. Only valid until Dispose.</summary>
    public NativeWindow Window => _address == null ? throw new ObjectDisposedException(nameof(MemoryMapping)) : new(_address, Length);

    /// <summary>
    /// Maps [0, length) of fd shared, read-write. The caller has checked the fd's size. The guard is taken only
    /// when the file can shrink; <paramref name="logger"/> hears about a full guard table.
    /// </summary>
    public static MemoryMapping Map(SafeFd fd, nuint length, bool writable = true, ILogger? logger = null)
    {
        if (length == 0) throw new ArgumentOutOfRangeException(nameof(length));
        // the page the guard replaces must be the file's page size: hugetlbfs mappings split only at huge pages
        Libc.Stat st;
        nuint page = Libc.fstat(fd, &st) == 0 && st.BlockSize >= 4096 && BitOperations.IsPow2(st.BlockSize) ? (nuint)st.BlockSize : 4096;
        void* p = Libc.mmap(null, length, Libc.PROT_READ | (writable ? Libc.PROT_WRITE : 0), Libc.MAP_SHARED, fd, 0);
        if (p == (void*)-1) throw new NativeException("mmap", Libc.Errno);
        return new MemoryMapping((byte*)p, length, page, !FileDescriptors.IsSealedAgainstShrinking(fd), logger);
    }

    public void Dispose()
    {
        if (_address != null)
        {
            // unguard first: once unmapped, the range may be reused by someone else's mapping
            SigbusGuard.Remove(_guardSlot);
            _ = Libc.munmap(_address, Length);
            _address = null;
        }
    }
}

/// <summary>What a path names, from lstat(2): a symbolic link is "something else", never followed.</summary>
internal enum PathEntry
{
    Missing,
    Socket,
    Other,
}

/// <summary>Facts about an fd, from fstat(2), and creation of anonymous memory files.</summary>
internal static unsafe class FileDescriptors
{
    internal readonly record struct Info(long Size, bool IsRegular, bool IsBlockDevice, uint Mode);

    public static bool TryStat(SafeFd fd, out Info info)
    {
        Libc.Stat st;
        if (Libc.fstat(fd, &st) != 0)
        {
            info = default;
            return false;
        }
        uint type = st.Mode & Libc.S_IFMT;
        info = new Info(st.Size, type == Libc.S_IFREG, type == Libc.S_IFBLK, st.Mode);
        return true;
    }

    /// <summary>What is at <paramref name="path"/>; throws when it cannot be looked at (e.g. permission denied).</summary>
    public static PathEntry Lookup(string path)
    {
        Libc.Stat st;
        if (Libc.lstat(path, &st) != 0)
        {
            int e = Libc.Errno;
            if (e is Libc.ENOENT or Libc.ENOTDIR) return PathEntry.Missing;
            throw new NativeException($"lstat {path}", e);
        }
        return (st.Mode & Libc.S_IFMT) == Libc.S_IFSOCK ? PathEntry.Socket : PathEntry.Other;
    }

    /// <summary>
    /// Whether the file carries F_SEAL_SHRINK (QEMU seals its memfd backends so by default). A seal can never be
    /// removed, so a sealed file cannot shrink under a mapping; a file without seals (EINVAL) is not sealed.
    /// </summary>
    public static bool IsSealedAgainstShrinking(SafeFd fd)
    {
        bool added = false;
        try
        {
            fd.DangerousAddRef(ref added);
            int seals = Libc.fcntl(fd.Fd, Libc.F_GET_SEALS);
            return seals >= 0 && (seals & Libc.F_SEAL_SHRINK) != 0;
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
        finally
        {
            if (added) fd.DangerousRelease();
        }
    }

    /// <summary>Whether <paramref name="fd"/> is an eventfd (the only kind a kick, call or err fd may be).</summary>
    public static bool IsEventFd(SafeFd fd)
    {
        bool added = false;
        try
        {
            fd.DangerousAddRef(ref added);
            var target = new FileInfo($"/proc/self/fd/{fd.Fd}").LinkTarget;
            return target == "anon_inode:[eventfd]";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ObjectDisposedException)
        {
            return false;
        }
        finally
        {
            if (added) fd.DangerousRelease();
        }
    }

    /// <summary>Sets O_NONBLOCK, so no read or write on the fd can stall the thread (the flag is shared with the peer's copy).</summary>
    public static bool SetNonBlocking(SafeFd fd)
    {
        const int F_GETFL = 3, F_SETFL = 4, O_NONBLOCK = 0x800;
        bool added = false;
        try
        {
            fd.DangerousAddRef(ref added);
            int flags = Libc.fcntl(fd.Fd, F_GETFL);
            return flags >= 0 && ((flags & O_NONBLOCK) != 0 || Libc.fcntl(fd.Fd, F_SETFL, flags | O_NONBLOCK) == 0);
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
        finally
        {
            if (added) fd.DangerousRelease();
        }
    }

    /// <summary>A memfd of the given size (the way QEMU and virtio-user share guest memory).</summary>
    public static SafeFd CreateMemFd(string name, long size, bool allowSealing = false)
    {
        int fd = Libc.memfd_create(name, Libc.MFD_CLOEXEC | (allowSealing ? Libc.MFD_ALLOW_SEALING : 0));
        if (fd < 0) throw new NativeException("memfd_create", Libc.Errno);
        var h = new SafeFd(fd);
        if (Libc.ftruncate(h, size) != 0)
        {
            int e = Libc.Errno;
            h.Dispose();
            throw new NativeException("ftruncate", e);
        }
        return h;
    }

    /// <summary>Adds seals (F_ADD_SEALS) to a memfd made with allowSealing.</summary>
    public static void AddSeals(SafeFd fd, int seals)
    {
        bool added = false;
        try
        {
            fd.DangerousAddRef(ref added);
            if (Libc.fcntl(fd.Fd, Libc.F_ADD_SEALS, seals) != 0) throw new NativeException("fcntl(F_ADD_SEALS)", Libc.Errno);
        }
        finally
        {
            if (added) fd.DangerousRelease();
        }
    }

    public static void Truncate(SafeFd fd, long size)
    {
        if (Libc.ftruncate(fd, size) != 0) throw new NativeException("ftruncate", Libc.Errno);
    }

    public static (SafeFd Read, SafeFd Write) Pipe()
    {
        int* p = stackalloc int[2];
        if (Libc.pipe2(p, Libc.O_CLOEXEC) != 0) throw new NativeException("pipe2", Libc.Errno);
        return (new SafeFd(p[0]), new SafeFd(p[1]));
    }

    public static SafeFd Duplicate(SafeFd fd)
    {
        int d = Libc.dup(fd);
        if (d < 0) throw new NativeException("dup", Libc.Errno);
        return new SafeFd(d);
    }

    public static void DataSync(SafeFd fd)
    {
        if (Libc.fdatasync(fd) != 0) throw new NativeException("fdatasync", Libc.Errno);
    }
}
