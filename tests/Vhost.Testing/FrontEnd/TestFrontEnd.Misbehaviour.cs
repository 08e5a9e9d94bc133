using System.Diagnostics;
using Vhost.Interop;
using Vhost.Protocol;

namespace Vhost.Testing.FrontEnd;

// Deliberately broken front-end behaviour for hostile-input tests. Each primitive does one wrong thing
// and leaves judging the back-end's reaction (close, NACK, ignore) to the test.
internal sealed partial class TestFrontEnd
{
    /// <summary>Sends a header announcing <paramref name="claimedSize"/> payload bytes, then nothing: the back-end must not wait forever.</summary>
    public void SendHeaderAndStall(VhostUserRequest request, uint claimedSize, uint flags = VhostUserFlags.Version) =>
        SendRaw(new VhostUserHeader((uint)request, flags, claimedSize).ToArray());

    /// <summary>Sends only the first <paramref name="headerBytes"/> (&lt; 12) bytes of a header.</summary>
    public void SendPartialHeader(VhostUserRequest request, int headerBytes)
    {
        if (headerBytes is < 0 or >= VhostUserHeader.Length) throw new ArgumentOutOfRangeException(nameof(headerBytes));
        var h = new VhostUserHeader((uint)request, VhostUserFlags.Version, 0).ToArray();
        if (headerBytes > 0) SendRaw(h.AsSpan(0, headerBytes));
    }

    /// <summary>
    /// Sends the header for the full payload but only its first <paramref name="sentBytes"/> bytes, then
    /// shuts the connection down (the back-end sees EOF mid-message).
    /// </summary>
    public void SendTruncatedThenClose(VhostUserRequest request, ReadOnlySpan<byte> payload, int sentBytes, ReadOnlySpan<SafeFd> fds = default)
    {
        if (sentBytes < 0 || sentBytes > payload.Length) throw new ArgumentOutOfRangeException(nameof(sentBytes));
        var bytes = VhostUserMessage.Encode(request, payload);
        SendRaw(bytes.AsSpan(0, VhostUserHeader.Length + sentBytes), fds);
        Shutdown();
    }

    /// <summary>
    /// Sends <paramref name="payload"/> under a size field that disagrees with it. Larger: the back-end
    /// waits for bytes that come only with the next message (or never). Smaller: the rest of the payload
    /// is read as the next header.
    /// </summary>
    public void SendWithSizeField(VhostUserRequest request, uint sizeField, ReadOnlySpan<byte> payload,
        ReadOnlySpan<SafeFd> fds = default, uint flags = VhostUserFlags.Version) =>
        SendRaw(VhostUserMessage.EncodeWithSize((uint)request, flags, sizeField, payload), fds);

    /// <summary>Sends a well-formed message carrying <paramref name="fds"/>, however many (up to the kernel's 253).</summary>
    public void SendWithFds(VhostUserRequest request, ReadOnlySpan<byte> payload, ReadOnlySpan<SafeFd> fds, bool needReply = false) =>
        SendRaw(VhostUserMessage.Encode(request, payload, needReply), fds);

    /// <summary>Sends a well-formed message with <paramref name="count"/> fresh eventfds attached (closed locally afterwards).</summary>
    public void SendWithJunkFds(VhostUserRequest request, ReadOnlySpan<byte> payload, int count, bool needReply = false)
    {
        var fds = CreateJunkFds(count);
        try
        {
            SendWithFds(request, payload, fds, needReply);
        }
        finally
        {
            foreach (var fd in fds) fd.Dispose();
        }
    }

    /// <summary>Eventfds to stuff into messages; the caller disposes them.</summary>
    public static SafeFd[] CreateJunkFds(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        var fds = new SafeFd[count];
        try
        {
            for (int i = 0; i < count; i++) fds[i] = EventFd.Create();
        }
        catch
        {
            foreach (var fd in fds) fd?.Dispose();
            throw;
        }
        return fds;
    }

    /// <summary>
    /// Sends the same message up to <paramref name="count"/> times without reading any reply. Sending runs
    /// on a helper thread; if it blocks (socket buffers full because the back-end is stuck writing
    /// replies nobody reads) past <paramref name="timeout"/>, the socket is shut down to unblock it.
    /// Returns how many messages went out completely.
    /// </summary>
    public int SendWithoutReading(ReadOnlySpan<byte> message, int count, TimeSpan timeout)
    {
        var bytes = message.ToArray();
        int sent = 0;
        var worker = new Thread(() =>
        {
            try
            {
                for (int i = 0; i < count; i++)
                {
                    Socket.Send(bytes);
                    Interlocked.Increment(ref sent);
                }
            }
            catch (NativeException)
            {
                // The back-end closed, or we shut down on timeout: both simply end the flood.
            }
        })
        { IsBackground = true, Name = "TestFrontEnd flood" };
        worker.Start();
        if (!worker.Join(timeout))
        {
            Shutdown();
            worker.Join();
        }
        return Volatile.Read(ref sent);
    }

    /// <summary><see cref="SendWithoutReading(ReadOnlySpan{byte}, int, TimeSpan)"/> of one request.</summary>
    public int SendWithoutReading(VhostUserRequest request, ReadOnlySpan<byte> payload, int count, TimeSpan timeout, bool needReply = false) =>
        SendWithoutReading(VhostUserMessage.Encode(request, payload, needReply), count, timeout);

    /// <summary>
    /// Connects to <paramref name="path"/> and closes again, <paramref name="count"/> times. Before each
    /// close <paramref name="beforeClose"/> may send something (e.g. half a header). Returns the number
    /// of successful connects.
    /// </summary>
    public static int ConnectAndCloseLoop(string path, int count, TimeSpan connectTimeout, Action<TestFrontEnd>? beforeClose = null)
    {
        int connected = 0;
        for (int i = 0; i < count; i++)
        {
            TestFrontEnd fe;
            try
            {
                fe = Connect(path, connectTimeout);
            }
            catch (TimeoutException)
            {
                continue;
            }
            using (fe)
            {
                connected++;
                try
                {
                    beforeClose?.Invoke(fe);
                }
                catch (NativeException)
                {
                    // The back-end may already have dropped this connection; that is its right.
                }
            }
        }
        return connected;
    }

    /// <summary>Sends <paramref name="count"/> random bytes (seeded, so a failure reproduces).</summary>
    public void SendGarbage(int count, int seed)
    {
        var bytes = new byte[count];
        new Random(seed).NextBytes(bytes);
        if (count > 0) SendRaw(bytes);
    }

    /// <summary>Measures how long the back-end takes to drop the connection; null if it keeps it beyond <paramref name="timeout"/>.</summary>
    public TimeSpan? TimeUntilClosedByPeer(TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        return IsClosedByPeer(timeout) ? sw.Elapsed : null;
    }
}
