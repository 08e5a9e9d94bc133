using System.Runtime.InteropServices;

namespace Vhost.Interop;

/// <summary>One epoll instance: the reactor's wait on sockets, kick fds and completion fds.</summary>
internal sealed unsafe partial class Epoll : IDisposable
{
    public const uint In = 0x001;
    public const uint Err = 0x008;
    public const uint Hup = 0x010;
    public const uint RdHup = 0x2000;

    private const int EPOLL_CLOEXEC = 0x80000;
    private const int EPOLL_CTL_ADD = 1;
    private const int EPOLL_CTL_DEL = 2;
    private const int EPOLL_CTL_MOD = 3;

    private readonly SafeFd _fd;

    public Epoll()
    {
        int fd = epoll_create1(EPOLL_CLOEXEC);
        if (fd < 0) throw new NativeException("epoll_create1", Libc.Errno);
        _fd = new SafeFd(fd);
    }

    /// <summary>One ready fd: what it is ready for and the token it was added with.</summary>
    [StructLayout(LayoutKind.Sequential, Pack = 4)]
    internal struct Event
    {
        public uint Events;
        public ulong Token;
    }

    /// <summary>Watches <paramref name="fd"/> (level-triggered); false if the fd cannot be watched (closed, not pollable).</summary>
    public bool Add(SafeFd fd, uint events, ulong token) => Control(EPOLL_CTL_ADD, fd, events, token);

    public bool Modify(SafeFd fd, uint events, ulong token) => Control(EPOLL_CTL_MOD, fd, events, token);

    /// <summary>Stops watching; harmless for an fd that was never added or is already closed.</summary>
    public void Remove(SafeFd fd) => Control(EPOLL_CTL_DEL, fd, 0, 0);

    private bool Control(int op, SafeFd fd, uint events, ulong token)
    {
        bool added = false;
        try
        {
            fd.DangerousAddRef(ref added);
            var ev = new Event { Events = events, Token = token };
            return epoll_ctl(_fd, op, fd.Fd, &ev) == 0;
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

    /// <summary>Waits up to <paramref name="timeoutMs"/> (-1: forever) for ready fds; returns how many were written.</summary>
    public int Wait(Span<Event> events, int timeoutMs)
    {
        fixed (Event* e = events)
        {
            int n = epoll_wait(_fd, e, events.Length, timeoutMs);
            if (n >= 0) return n;
            int errno = Libc.Errno;
            if (errno == Libc.EINTR) return 0;
            throw new NativeException("epoll_wait", errno);
        }
    }

    public void Dispose() => _fd.Dispose();

    [LibraryImport("libc", SetLastError = true)] private static partial int epoll_create1(int flags);
    [LibraryImport("libc", SetLastError = true)] private static partial int epoll_ctl(SafeFd epfd, int op, int fd, Event* ev);
    [LibraryImport("libc", SetLastError = true)] private static partial int epoll_wait(SafeFd epfd, Event* events, int max, int timeout);
}
