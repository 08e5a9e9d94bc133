namespace Vhost.Interop;

/// <summary>
/// Socket operations that only a misbehaving peer needs. The test front-end uses them to check that the
/// back-end survives what <see cref="UnixSocket.Send"/> deliberately refuses to produce.
/// </summary>
internal static unsafe class UnixSocketTestSupport
{
    /// <summary>The kernel's own limit on fds in one SCM_RIGHTS message (SCM_MAX_FD).</summary>
    public const int KernelMaxFds = 253;

    /// <summary>
    /// Sends <paramref name="data"/> with any number of fds (up to the kernel's limit) attached to its first
    /// byte, so tests can exceed <see cref="UnixSocket.MaxFds"/>. Not serialised with other writers.
    /// </summary>
    public static void SendWithAnyFdCount(UnixSocket socket, ReadOnlySpan<byte> data, ReadOnlySpan<SafeFd> fds)
    {
        ArgumentNullException.ThrowIfNull(socket);
        if (fds.Length > KernelMaxFds) throw new ArgumentException($"the kernel refuses more than {KernelMaxFds} fds", nameof(fds));
        if (data.IsEmpty) throw new ArgumentException("fds need at least one byte to travel with", nameof(data));
        int payload = 4 * fds.Length;
        int controlSize = fds.Length == 0 ? 0 : sizeof(Libc.CMsgHdr) + ((payload + 7) & ~7);
        // Heap, not stack: 253 fds need ~1 KiB and this is never a hot path.
        byte[] control = new byte[Math.Max(controlSize, 1)];
        fixed (byte* c = control)
        fixed (byte* b = data)
        {
            if (fds.Length > 0)
            {
                var h = (Libc.CMsgHdr*)c;
                h->Len = (nuint)(sizeof(Libc.CMsgHdr) + payload);
                h->Level = Libc.SOL_SOCKET;
                h->Type = Libc.SCM_RIGHTS;
                int* slots = (int*)(c + sizeof(Libc.CMsgHdr));
                for (int i = 0; i < fds.Length; i++) slots[i] = fds[i].Fd;
            }
            int sent = 0;
            while (sent < data.Length)
            {
                var iov = new Libc.IoVec { Base = b + sent, Length = (nuint)(data.Length - sent) };
                var msg = new Libc.MsgHdr { Iov = &iov, IovLen = 1 };
                if (sent == 0 && controlSize > 0) { msg.Control = c; msg.ControlLen = (nuint)controlSize; }
                nint n = Libc.sendmsg(socket.Handle, &msg, Libc.MSG_NOSIGNAL);
                if (n < 0)
                {
                    int e = Libc.Errno;
                    if (e == Libc.EINTR) continue;
                    throw new NativeException("sendmsg", e);
                }
                sent += (int)n;
            }
        }
    }
}
