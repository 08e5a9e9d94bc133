namespace Vhost.Interop;

/// <summary>eventfd(2) operations: the kick and call signals of a virtqueue.</summary>
internal static unsafe class EventFd
{
    public static SafeFd Create(bool nonBlocking = false)
    {
        int fd = Libc.eventfd(0, Libc.EFD_CLOEXEC | (nonBlocking ? Libc.EFD_NONBLOCK : 0));
        if (fd < 0) throw new NativeException("eventfd", Libc.Errno);
        return new SafeFd(fd);
    }

    /// <summary>
    /// Adds one to the counter. Returns false if the write failed: the peer's fd may be gone, the counter full
    /// on a non-blocking fd, or our handle already disposed (a late signal after teardown is not an error).
    /// </summary>
    public static bool Signal(SafeFd fd)
    {
        ulong one = 1;
        try
        {
            return Libc.write(fd, &one, 8) == 8;
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
    }

    /// <summary>Reads and clears the counter; 0 if it was zero (non-blocking fd), the read failed or the handle is disposed.</summary>
    public static ulong Consume(SafeFd fd)
    {
        ulong v = 0;
        try
        {
            return Libc.read(fd, &v, 8) == 8 ? v : 0;
        }
        catch (ObjectDisposedException)
        {
            return 0;
        }
    }

    /// <summary>
    /// Reads and clears the counter if it is above zero, without blocking even on a blocking fd (a front-end's
    /// kick fd may be one): 0 if nothing was signalled.
    /// </summary>
    public static ulong TryConsume(SafeFd fd) => Poll.WaitReadable(fd, 0) ? Consume(fd) : 0;
}
