using System.Runtime.InteropServices;
using System.Text;

namespace Vhost.Interop;

/// <summary>
/// A Unix stream socket that carries file descriptors (SCM_RIGHTS), which System.Net.Sockets
/// cannot do. Blocking; one reader thread and any number of writers (writes are serialised).
/// </summary>
internal sealed unsafe class UnixSocket : IDisposable
{
    /// <summary>The most fds one vhost-user message may carry (VHOST_MEMORY_BASELINE_NREGIONS).</summary>
    public const int MaxFds = 8;

    private readonly SafeFd _fd;
    private readonly Lock _sendLock = new();

    private UnixSocket(SafeFd fd) => _fd = fd;

    public SafeFd Handle => _fd;

    /// <summary>Wraps a connected socket fd received from the peer (the backend channel).</summary>
    public static UnixSocket FromFd(SafeFd fd) => new(fd);

    public static UnixSocket Listen(string path, int backlog = 16)
    {
        var fd = NewSocket();
        try
        {
            var (addr, len) = Address(path);
            fixed (byte* a = addr)
            {
                if (Libc.bind(fd, a, len) != 0) throw new NativeException($"bind {path}", Libc.Errno);
            }
            if (Libc.listen(fd, backlog) != 0) throw new NativeException($"listen {path}", Libc.Errno);
            return new UnixSocket(fd);
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>Connects to a listening socket; returns null (with errno) when nobody listens yet.</summary>
    public static UnixSocket? TryConnect(string path, out int errno)
    {
        var fd = NewSocket();
        var (addr, len) = Address(path);
        fixed (byte* a = addr)
        {
            if (Libc.connect(fd, a, len) != 0)
            {
                errno = Libc.Errno;
                fd.Dispose();
                return null;
            }
        }
        errno = 0;
        return new UnixSocket(fd);
    }

    public static (UnixSocket, UnixSocket) Pair()
    {
        int* sv = stackalloc int[2];
        if (Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_STREAM | Libc.SOCK_CLOEXEC, 0, sv) != 0)
            throw new NativeException("socketpair", Libc.Errno);
        return (new UnixSocket(new SafeFd(sv[0])), new UnixSocket(new SafeFd(sv[1])));
    }

    /// <summary>The next waiting connection without blocking (the listener is non-blocking): null when none waits.</summary>
    public UnixSocket? TryAccept(out int errno)
    {
        while (true)
        {
            int fd = Libc.accept4(_fd, null, null, Libc.SOCK_CLOEXEC);
            if (fd >= 0)
            {
                errno = 0;
                return new UnixSocket(new SafeFd(fd));
            }
            errno = Libc.Errno;
            if (errno != Libc.EINTR) return null;
        }
    }

    /// <summary>Sends never block from here on: a peer that stops reading gets an error instead of a stalled thread.</summary>
    public bool SetNonBlocking() => FileDescriptors.SetNonBlocking(_fd);

    /// <summary>Blocks for the next connection; null once the listener was shut down.</summary>
    public UnixSocket? Accept()
    {
        while (true)
        {
            int fd = Libc.accept4(_fd, null, null, Libc.SOCK_CLOEXEC);
            if (fd >= 0) return new UnixSocket(new SafeFd(fd));
            int e = Libc.Errno;
            if (e == Libc.EINTR) continue;
            if (e is Libc.EINVAL or Libc.EBADF) return null;
            throw new NativeException("accept", e);
        }
    }

    /// <summary>
    /// Receives up to <paramref name="buffer"/>.Length bytes and any fds sent with them. Returns the
    /// byte count, 0 at end of stream. Fds beyond <paramref name="fds"/>' room are closed and
    /// reported through <paramref name="truncated"/>.
    /// </summary>
    public int Receive(Span<byte> buffer, List<SafeFd> fds, out bool truncated) => Receive(buffer, fds, out truncated, 0);

    /// <summary>
    /// <see cref="Receive(Span{byte}, List{SafeFd}, out bool)"/> without blocking: -1 when nothing can be read
    /// now (EAGAIN), 0 at end of stream.
    /// </summary>
    public int TryReceive(Span<byte> buffer, List<SafeFd> fds, out bool truncated) => Receive(buffer, fds, out truncated, Libc.MSG_DONTWAIT);

    private int Receive(Span<byte> buffer, List<SafeFd> fds, out bool truncated, int flags)
    {
        truncated = false;
        const int controlSize = 16 + 4 * MaxFds * 2; // room for twice the legal count, so excess is seen
        byte* control = stackalloc byte[controlSize];
        fixed (byte* b = buffer)
        {
            var iov = new Libc.IoVec { Base = b, Length = (nuint)buffer.Length };
            var msg = new Libc.MsgHdr { Iov = &iov, IovLen = 1, Control = control, ControlLen = controlSize };
            nint n;
            do n = Libc.recvmsg(_fd, &msg, Libc.MSG_CMSG_CLOEXEC | flags);
            while (n < 0 && Libc.Errno == Libc.EINTR);
            if (n < 0)
            {
                int e = Libc.Errno;
                if (e is Libc.EBADF or Libc.EINVAL) return 0;
                if (e == Libc.EAGAIN && flags != 0) return -1;
                throw new NativeException("recvmsg", e);
            }
            if ((msg.Flags & Libc.MSG_CTRUNC) != 0) truncated = true;
            CollectFds(&msg, fds, ref truncated);
            return (int)n;
        }
    }

    private static void CollectFds(Libc.MsgHdr* msg, List<SafeFd> fds, ref bool truncated)
    {
        byte* p = (byte*)msg->Control;
        byte* end = p + msg->ControlLen;
        while (p + sizeof(Libc.CMsgHdr) <= end)
        {
            var h = (Libc.CMsgHdr*)p;
            if (h->Len < (nuint)sizeof(Libc.CMsgHdr) || p + h->Len > end) break;
            if (h->Level == Libc.SOL_SOCKET && h->Type == Libc.SCM_RIGHTS)
            {
                int count = (int)((h->Len - (nuint)sizeof(Libc.CMsgHdr)) / 4);
                int* data = (int*)(p + sizeof(Libc.CMsgHdr));
                for (int i = 0; i < count; i++)
                {
                    var fd = new SafeFd(data[i]);
                    if (fds.Count < MaxFds) fds.Add(fd);
                    else { fd.Dispose(); truncated = true; }
                }
            }
            p += (h->Len + 7) & ~(nuint)7;
        }
    }

    /// <summary>Sends all of <paramref name="data"/>, the fds with its first byte.</summary>
    public void Send(ReadOnlySpan<byte> data, ReadOnlySpan<SafeFd> fds = default)
    {
        if (fds.Length > MaxFds) throw new ArgumentException("too many fds", nameof(fds));
        lock (_sendLock)
        {
            int controlSize = fds.Length == 0 ? 0 : 16 + ((4 * fds.Length + 7) & ~7);
            byte* control = stackalloc byte[16 + 4 * MaxFds];
            if (fds.Length > 0)
            {
                var h = (Libc.CMsgHdr*)control;
                h->Len = (nuint)(16 + 4 * fds.Length);
                h->Level = Libc.SOL_SOCKET;
                h->Type = Libc.SCM_RIGHTS;
                for (int i = 0; i < fds.Length; i++) ((int*)(control + 16))[i] = fds[i].Fd;
            }
            fixed (byte* b = data)
            {
                int sent = 0;
                while (sent < data.Length || (sent == 0 && data.Length == 0))
                {
                    var iov = new Libc.IoVec { Base = b + sent, Length = (nuint)(data.Length - sent) };
                    var msg = new Libc.MsgHdr { Iov = &iov, IovLen = 1 };
                    if (sent == 0 && controlSize > 0) { msg.Control = control; msg.ControlLen = (nuint)controlSize; }
                    nint n = Libc.sendmsg(_fd, &msg, Libc.MSG_NOSIGNAL);
                    if (n < 0)
                    {
                        int e = Libc.Errno;
                        if (e == Libc.EINTR) continue;
                        throw new NativeException("sendmsg", e);
                    }
                    sent += (int)n;
                    if (data.Length == 0) break;
                }
            }
        }
    }

    /// <summary>Wakes a blocked Receive/Accept (it returns end of stream) without closing the fd.</summary>
    public void Shutdown()
    {
        // a connection may end on its own while another thread asks it to stop: that is not an error
        bool added = false;
        try
        {
            _fd.DangerousAddRef(ref added);
            _ = Libc.shutdown(_fd, Libc.SHUT_RDWR);
        }
        catch (ObjectDisposedException)
        {
        }
        finally
        {
            if (added) _fd.DangerousRelease();
        }
    }

    /// <summary>Waits until data can be read; false on timeout.</summary>
    public bool WaitReadable(int timeoutMs) => Poll.WaitReadable(_fd, timeoutMs);

    public void Dispose() => _fd.Dispose();

    private static SafeFd NewSocket()
    {
        int fd = Libc.socket(Libc.AF_UNIX, Libc.SOCK_STREAM | Libc.SOCK_CLOEXEC, 0);
        if (fd < 0) throw new NativeException("socket", Libc.Errno);
        return new SafeFd(fd);
    }

    private static (byte[] Addr, uint Len) Address(string path)
    {
        byte[] p = Encoding.UTF8.GetBytes(path);
        if (p.Length >= 108) throw new ArgumentException($"socket path longer than 107 bytes: {path}", nameof(path));
        var addr = new byte[110];
        addr[0] = (byte)Libc.AF_UNIX;
        p.CopyTo(addr, 2);
        return (addr, (uint)(2 + p.Length + 1));
    }
}

/// <summary>poll(2) for one or a few fds.</summary>
internal static unsafe class Poll
{
    public static bool WaitReadable(SafeFd fd, int timeoutMs)
    {
        bool added = false;
        fd.DangerousAddRef(ref added);
        try
        {
            var p = new Libc.PollFd { Fd = fd.Fd, Events = Libc.POLLIN };
            int r;
            do r = Libc.poll(&p, 1, timeoutMs);
            while (r < 0 && Libc.Errno == Libc.EINTR);
            return r > 0;
        }
        finally
        {
            if (added) fd.DangerousRelease();
        }
    }

    /// <summary>Waits for any of the fds; returns the index of one that is readable, or -1 on timeout.</summary>
    public static int WaitAny(ReadOnlySpan<int> fds, int timeoutMs)
    {
        var p = stackalloc Libc.PollFd[fds.Length];
        for (int i = 0; i < fds.Length; i++) p[i] = new Libc.PollFd { Fd = fds[i], Events = Libc.POLLIN };
        int r;
        do r = Libc.poll(p, (nuint)fds.Length, timeoutMs);
        while (r < 0 && Libc.Errno == Libc.EINTR);
        if (r <= 0) return -1;
        for (int i = 0; i < fds.Length; i++) if (p[i].REvents != 0) return i;
        return -1;
    }
}
