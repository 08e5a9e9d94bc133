using System.Runtime.InteropServices;

namespace Vhost.Interop;

/// <summary>
/// The libc calls the library needs. Everything here is x86_64/aarch64 Linux; the struct layouts are
/// those of the LP64 ABI. Callers outside Interop use the safe wrappers (<see cref="UnixSocket"/>,
/// <see cref="EventFd"/>, <see cref="MemoryMapping"/>), never these directly.
/// </summary>
internal static unsafe partial class Libc
{
    private const string C = "libc";

    public const int AF_UNIX = 1;
    public const int SOCK_STREAM = 1;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int SOL_SOCKET = 1;
    public const int SCM_RIGHTS = 1;
    public const int MSG_NOSIGNAL = 0x4000;
    public const int MSG_DONTWAIT = 0x40;
    public const int MSG_CTRUNC = 0x8;
    public const int MSG_CMSG_CLOEXEC = 0x40000000;
    public const int SHUT_RDWR = 2;
    public const int PROT_READ = 1;
    public const int PROT_WRITE = 2;
    public const int MAP_SHARED = 1;
    public const int EFD_CLOEXEC = 0x80000;
    public const int EFD_NONBLOCK = 0x800;
    public const uint MFD_CLOEXEC = 1;
    public const uint MFD_ALLOW_SEALING = 2;
    public const int F_ADD_SEALS = 1033;
    public const int F_GET_SEALS = 1034;
    public const int F_SEAL_SHRINK = 2;
    public const int O_CLOEXEC = 0x80000;
    public const short POLLIN = 1;
    public const int F_GETFD = 1;
    public const int S_IFMT = 0xF000;
    public const int S_IFREG = 0x8000;
    public const int S_IFBLK = 0x6000;
    public const int S_IFSOCK = 0xC000;
    public const int EINTR = 4;
    public const int EAGAIN = 11;
    public const int EBADF = 9;
    public const int ENOENT = 2;
    public const int ENOTDIR = 20;
    public const int EINVAL = 22;

    [StructLayout(LayoutKind.Sequential)]
    internal struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct MsgHdr
    {
        public void* Name;
        public uint NameLen;
        public IoVec* Iov;
        public nuint IovLen;
        public void* Control;
        public nuint ControlLen;
        public int Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct CMsgHdr
    {
        public nuint Len;
        public int Level;
        public int Type;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct PollFd
    {
        public int Fd;
        public short Events;
        public short REvents;
    }

    /// <summary>The parts of struct stat (x86_64 layout, 144 bytes) we read.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 144)]
    internal struct Stat
    {
        [FieldOffset(24)] public uint Mode;
        [FieldOffset(48)] public long Size;
        [FieldOffset(56)] public long BlockSize;
    }

    [LibraryImport(C, SetLastError = true)] public static partial int close(int fd);
    [LibraryImport(C, SetLastError = true)] public static partial int socket(int domain, int type, int protocol);
    [LibraryImport(C, SetLastError = true)] public static partial int bind(SafeFd fd, byte* addr, uint len);
    [LibraryImport(C, SetLastError = true)] public static partial int listen(SafeFd fd, int backlog);
    [LibraryImport(C, SetLastError = true)] public static partial int accept4(SafeFd fd, void* addr, void* len, int flags);
    [LibraryImport(C, SetLastError = true)] public static partial int connect(SafeFd fd, byte* addr, uint len);
    [LibraryImport(C, SetLastError = true)] public static partial int shutdown(SafeFd fd, int how);
    [LibraryImport(C, SetLastError = true)] public static partial int socketpair(int domain, int type, int protocol, int* sv);
    [LibraryImport(C, SetLastError = true)] public static partial nint recvmsg(SafeFd fd, MsgHdr* msg, int flags);
    [LibraryImport(C, SetLastError = true)] public static partial nint sendmsg(SafeFd fd, MsgHdr* msg, int flags);
    [LibraryImport(C, SetLastError = true)] public static partial nint read(SafeFd fd, void* buf, nuint count);
    [LibraryImport(C, SetLastError = true)] public static partial nint write(SafeFd fd, void* buf, nuint count);
    [LibraryImport(C, SetLastError = true)] public static partial int poll(PollFd* fds, nuint nfds, int timeout);
    [LibraryImport(C, SetLastError = true)] public static partial int fstat(SafeFd fd, Stat* st);
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int lstat(string path, Stat* st);
    [LibraryImport(C, SetLastError = true)] public static partial int ftruncate(SafeFd fd, long length);
    [LibraryImport(C, SetLastError = true)] public static partial int fcntl(int fd, int cmd);
    [LibraryImport(C, SetLastError = true)] public static partial int fcntl(int fd, int cmd, int arg);
    [LibraryImport(C, SetLastError = true)] public static partial int eventfd(uint initval, int flags);
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int memfd_create(string name, uint flags);
    [LibraryImport(C, SetLastError = true)] public static partial void* mmap(void* addr, nuint length, int prot, int flags, SafeFd fd, long offset);
    [LibraryImport(C, SetLastError = true)] public static partial int munmap(void* addr, nuint length);
    [LibraryImport(C, SetLastError = true)] public static partial int fdatasync(SafeFd fd);
    [LibraryImport(C, SetLastError = true)] public static partial int fsync(SafeFd fd);
    [LibraryImport(C, SetLastError = true)] public static partial int dup(SafeFd fd);
    [LibraryImport(C, SetLastError = true)] public static partial int pipe2(int* fds, int flags);
    [LibraryImport(C, SetLastError = true)] public static partial nint pread(SafeFd fd, void* buf, nuint count, long offset);
    [LibraryImport(C, SetLastError = true)] public static partial nint pwrite(SafeFd fd, void* buf, nuint count, long offset);

    public static int Errno => Marshal.GetLastPInvokeError();

    public static string Describe(int errno) => $"{Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})";
}

/// <summary>A failed system call, with errno.</summary>
internal sealed class NativeException(string operation, int errno)
    : IOException($"{operation} failed: {Libc.Describe(errno)}")
{
    public int Errno { get; } = errno;
}
