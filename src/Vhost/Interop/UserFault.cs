using System.Numerics;
using System.Runtime.InteropServices;

namespace Vhost.Interop;

internal static unsafe partial class Libc
{
    public const int O_NONBLOCK = 0x800;

    // ioctl(2) and syscall(2) are variadic in C; these fixed prototypes pass integers and pointers in the
    // same registers on x86-64 and aarch64, as the fcntl overloads above do
    [LibraryImport(C, SetLastError = true)] public static partial int ioctl(SafeFd fd, nuint request, void* arg);
    [LibraryImport(C, SetLastError = true)] public static partial int ioctl(SafeFd fd, nuint request, nint arg);
    [LibraryImport(C, SetLastError = true)] public static partial long syscall(long number, long arg);
}

/// <summary>
/// A userfaultfd (Linux's userfaultfd(2)) for postcopy live migration (VHOST_USER_PROTOCOL_F_PAGEFAULT): the
/// back-end registers its mappings of guest memory in MISSING mode and hands the fd to the front-end, which
/// reads the faults our threads take on pages not yet migrated, places the pages through its own mapping of
/// the same file and wakes us (UFFDIO_WAKE). A thread touching a missing page sleeps in the kernel until then;
/// closing the fd (every copy of it) lets such a thread go on with a fresh page.
/// </summary>
internal sealed unsafe class UserFaultFd : IDisposable
{
    // <linux/userfaultfd.h>: ioctl type 0xAA; _IOWR = 3 << 30, _IOR = 2 << 30, size << 16, type << 8, nr
    private const ulong UffdApi = 0xAA;
    private const nuint USERFAULTFD_IOC_NEW = 0xAA00;                                  // _IO(0xAA, 0x00)
    private const nuint UFFDIO_API = (3u << 30) | (24u << 16) | (0xAAu << 8) | 0x3F;   // struct uffdio_api
    private const nuint UFFDIO_REGISTER = (3u << 30) | (32u << 16) | (0xAAu << 8) | 0x00; // struct uffdio_register
    private const nuint UFFDIO_UNREGISTER = (2u << 30) | (16u << 16) | (0xAAu << 8) | 0x01; // struct uffdio_range
    private const nuint UFFDIO_WAKE = (2u << 30) | (16u << 16) | (0xAAu << 8) | 0x02;  // struct uffdio_range
    private const ulong UFFDIO_REGISTER_MODE_MISSING = 1;
    private const int _UFFDIO_WAKE = 2;
    private const int _UFFDIO_REGISTER = 0;
    private const byte UFFD_EVENT_PAGEFAULT = 0x12;
    private const int UffdMsgSize = 32;

    private UserFaultFd(SafeFd fd) => Handle = fd;

    /// <summary>The fd; a copy of it (<see cref="FileDescriptors.Duplicate"/>) is what goes to the front-end.</summary>
    public SafeFd Handle { get; }

    /// <summary>
    /// Opens a userfaultfd (through /dev/userfaultfd, else the system call), non-blocking and close-on-exec,
    /// and completes the UFFDIO_API handshake. Null with the reason when this host cannot (no kernel support,
    /// no permission: vm.unprivileged_userfaultfd is 0 and we are not privileged).
    /// </summary>
    public static UserFaultFd? TryCreate(out string? error)
    {
        const int flags = Libc.O_CLOEXEC | Libc.O_NONBLOCK;
        SafeFd? fd = null;
        string? why = null;
        int dev = Libc.open("/dev/userfaultfd", Libc.O_RDWR | Libc.O_CLOEXEC, 0);
        if (dev >= 0)
        {
            using var device = new SafeFd(dev);
            int u = Libc.ioctl(device, USERFAULTFD_IOC_NEW, (nint)flags);
            if (u >= 0) fd = new SafeFd(u);
            else why = $"/dev/userfaultfd: USERFAULTFD_IOC_NEW failed: {Libc.Describe(Libc.Errno)}";
        }
        else
        {
            why = $"/dev/userfaultfd: {Libc.Describe(Libc.Errno)}";
        }
        if (fd == null)
        {
            long u = Libc.syscall(SysUserfaultfd, flags);
            if (u < 0)
            {
                error = $"{why}; userfaultfd(2): {Libc.Describe(Libc.Errno)}";
                return null;
            }
            fd = new SafeFd((int)u);
        }
        // struct uffdio_api { u64 api; u64 features; u64 ioctls; }: no optional features are needed
        ulong* api = stackalloc ulong[3];
        api[0] = UffdApi;
        api[1] = 0;
        api[2] = 0;
        if (Libc.ioctl(fd, UFFDIO_API, api) != 0)
        {
            error = $"UFFDIO_API failed: {Libc.Describe(Libc.Errno)}";
            fd.Dispose();
            return null;
        }
        if ((api[2] & (1UL << _UFFDIO_REGISTER)) == 0)
        {
            error = $"the kernel's userfaultfd offers no registration (ioctls 0x{api[2]:x})";
            fd.Dispose();
            return null;
        }
        error = null;
        return new UserFaultFd(fd);
    }

    private static long SysUserfaultfd => RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 => 323,
        Architecture.Arm64 => 282,
        _ => -1,
    };

    /// <summary>
    /// Registers the pages under <paramref name="window"/> (rounded out to <paramref name="pageSize"/>, which
    /// must be the mapping's page size) in MISSING mode. Null on success, else why not.
    /// </summary>
    public string? RegisterMissing(NativeWindow window, nuint pageSize)
    {
        var (start, length) = Pages(window, pageSize);
        // struct uffdio_register { struct uffdio_range { u64 start; u64 len; } range; u64 mode; u64 ioctls; }
        ulong* reg = stackalloc ulong[4];
        reg[0] = start;
        reg[1] = length;
        reg[2] = UFFDIO_REGISTER_MODE_MISSING;
        reg[3] = 0;
        if (Libc.ioctl(Handle, UFFDIO_REGISTER, reg) != 0)
            return $"UFFDIO_REGISTER of 0x{start:x}+0x{length:x} failed: {Libc.Describe(Libc.Errno)}";
        // the front-end must be able to wake what faults there
        if ((reg[3] & (1UL << _UFFDIO_WAKE)) == 0)
        {
            Unregister(window, pageSize);
            return $"the kernel cannot wake faults in 0x{start:x}+0x{length:x} (ioctls 0x{reg[3]:x})";
        }
        return null;
    }

    /// <summary>Undoes <see cref="RegisterMissing"/>; null on success.</summary>
    public string? Unregister(NativeWindow window, nuint pageSize)
    {
        var (start, length) = Pages(window, pageSize);
        ulong* range = stackalloc ulong[2];
        range[0] = start;
        range[1] = length;
        return Libc.ioctl(Handle, UFFDIO_UNREGISTER, range) == 0
            ? null
            : $"UFFDIO_UNREGISTER of 0x{start:x}+0x{length:x} failed: {Libc.Describe(Libc.Errno)}";
    }

    private static (ulong Start, ulong Length) Pages(NativeWindow window, nuint pageSize)
    {
        if (window.IsEmpty || window.Length == 0) throw new ArgumentException("empty window", nameof(window));
        if (!BitOperations.IsPow2((ulong)pageSize)) throw new ArgumentOutOfRangeException(nameof(pageSize));
        ulong mask = (ulong)pageSize - 1;
        ulong start = (ulong)window.Address & ~mask;
        ulong end = ((ulong)window.Address + (ulong)window.Length + mask) & ~mask;
        return (start, end - start);
    }

    /// <summary>The page size of a mapping of <paramref name="fd"/>: its block size (hugetlbfs) or 4 KiB.</summary>
    public static nuint PageSizeOf(SafeFd fd)
    {
        Libc.Stat st;
        return Libc.fstat(fd, &st) == 0 && st.BlockSize >= 4096 && BitOperations.IsPow2(st.BlockSize) ? (nuint)st.BlockSize : 4096;
    }

    /// <summary>Whether <paramref name="fd"/> is a userfaultfd (/proc/self/fd says anon_inode:[userfaultfd]).</summary>
    public static bool IsUserFaultFd(SafeFd fd)
    {
        bool added = false;
        try
        {
            fd.DangerousAddRef(ref added);
            return new FileInfo($"/proc/self/fd/{fd.Fd}").LinkTarget == "anon_inode:[userfaultfd]";
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

    // ---- the front-end's side (Vhost.FrontEnd, tests): read faults, wake the faulting threads ----

    /// <summary>
    /// Waits up to <paramref name="timeoutMs"/> for a page fault on <paramref name="fd"/> and returns its
    /// address; null when none came.
    /// </summary>
    public static ulong? ReadFault(SafeFd fd, int timeoutMs)
    {
        byte* msg = stackalloc byte[UffdMsgSize];
        while (Poll.WaitReadable(fd, timeoutMs))
        {
            nint n = Libc.read(fd, msg, UffdMsgSize);
            if (n < 0 && Libc.Errno is Libc.EAGAIN or Libc.EINTR) continue;
            if (n != UffdMsgSize) throw new NativeException("read(userfaultfd)", n < 0 ? Libc.Errno : Libc.EINVAL);
            // struct uffd_msg: u8 event, 7 bytes reserved, then for a page fault u64 flags and u64 address
            if (msg[0] == UFFD_EVENT_PAGEFAULT) return *(ulong*)(msg + 16);
        }
        return null;
    }

    /// <summary>UFFDIO_WAKE: wakes the threads faulting in [address, address + length) once the pages are there.</summary>
    public static void Wake(SafeFd fd, ulong address, ulong length)
    {
        ulong* range = stackalloc ulong[2];
        range[0] = address;
        range[1] = length;
        if (Libc.ioctl(fd, UFFDIO_WAKE, range) != 0) throw new NativeException("UFFDIO_WAKE", Libc.Errno);
    }

    public void Dispose() => Handle.Dispose();
}
