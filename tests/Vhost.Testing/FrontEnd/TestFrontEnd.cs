using System.Diagnostics;
using Vhost.Interop;
using Vhost.Protocol;

namespace Vhost.Testing.FrontEnd;

/// <summary>
/// A scriptable vhost-user front-end (the QEMU / virtio-user side) for unit tests. The raw API writes any
/// bytes and fds; the typed helpers (TestFrontEnd.Requests.cs) speak the protocol correctly; the
/// misbehaviour primitives (TestFrontEnd.Misbehaviour.cs) deliberately do not.
/// Not thread-safe apart from what <see cref="UnixSocket"/> itself guarantees.
/// </summary>
internal sealed partial class TestFrontEnd : IDisposable
{
    /// <summary>Larger replies are treated as a broken back-end rather than allocated.</summary>
    public const int MaxReplyPayload = 1 << 20;

    private const int ECONNRESET = 104;

    private readonly bool _ownsSocket;
    private bool _disposed;

    public TestFrontEnd(UnixSocket socket, bool ownsSocket = true)
    {
        Socket = socket ?? throw new ArgumentNullException(nameof(socket));
        _ownsSocket = ownsSocket;
    }

    public UnixSocket Socket { get; }

    /// <summary>How long reply-reading helpers wait when not told otherwise.</summary>
    public TimeSpan DefaultTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Features last sent with SET_FEATURES.</summary>
    public ulong AckedFeatures { get; private set; }

    /// <summary>Protocol features last sent with SET_PROTOCOL_FEATURES.</summary>
    public ulong AckedProtocolFeatures { get; private set; }

    public bool ReplyAckNegotiated => (AckedProtocolFeatures & (1UL << (int)ProtocolFeature.ReplyAck)) != 0;

    /// <summary>A connected pair: the front-end, and the socket to hand to the back-end under test.</summary>
    public static TestFrontEnd CreatePair(out UnixSocket backEndSocket)
    {
        var (front, back) = UnixSocket.Pair();
        backEndSocket = back;
        return new TestFrontEnd(front);
    }

    /// <summary>Connects to a back-end in server mode, retrying until it listens or the timeout passes.</summary>
    public static TestFrontEnd Connect(string path, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            var s = UnixSocket.TryConnect(path, out int errno);
            if (s != null) return new TestFrontEnd(s);
            if (sw.Elapsed >= timeout)
                throw new TimeoutException($"nobody accepted on {path} within {timeout} (last errno {errno})");
            Thread.Sleep(10);
        }
    }

    // ---- raw API ----

    /// <summary>Writes <paramref name="bytes"/> exactly as given, fds (any number) with the first byte.</summary>
    public void SendRaw(ReadOnlySpan<byte> bytes, params ReadOnlySpan<SafeFd> fds)
    {
        if (fds.Length > UnixSocket.MaxFds) UnixSocketTestSupport.SendWithAnyFdCount(Socket, bytes, fds);
        else Socket.Send(bytes, fds);
    }

    /// <summary>Sends a well-formed message (version 1, size = payload length).</summary>
    public void Send(VhostUserRequest request, ReadOnlySpan<byte> payload = default, ReadOnlySpan<SafeFd> fds = default, bool needReply = false) =>
        SendRaw(VhostUserMessage.Encode(request, payload, needReply), fds);

    /// <summary>Sends with raw request number and flags (any version bits, REPLY set, unknown requests ...).</summary>
    public void Send(uint request, uint flags, ReadOnlySpan<byte> payload, ReadOnlySpan<SafeFd> fds = default) =>
        SendRaw(VhostUserMessage.Encode(request, flags, payload), fds);

    /// <summary>
    /// Reads the next message from the back-end: header, payload and fds. Returns null on end of stream
    /// before a header; throws <see cref="TimeoutException"/> when nothing complete arrives in time (the
    /// stream is then out of step) and <see cref="EndOfStreamException"/> on EOF inside a message.
    /// </summary>
    public VhostUserMessage? ReceiveReply(TimeSpan? timeout = null)
    {
        var deadline = Stopwatch.StartNew();
        var limit = timeout ?? DefaultTimeout;
        var fds = new List<SafeFd>();
        bool truncated = false;
        try
        {
            var head = new byte[VhostUserHeader.Length];
            int got = ReadFully(head, fds, ref truncated, deadline, limit);
            if (got == 0) return null;
            if (got < head.Length) throw new EndOfStreamException($"back-end closed after {got} header bytes");
            var header = VhostUserHeader.Read(head);
            if (header.Size > MaxReplyPayload) throw new InvalidDataException($"reply claims {header.Size} payload bytes");
            var payload = new byte[header.Size];
            got = ReadFully(payload, fds, ref truncated, deadline, limit);
            if (got < payload.Length) throw new EndOfStreamException($"back-end closed after {got} of {payload.Length} payload bytes ({header})");
            return new VhostUserMessage(header, payload, fds.ToArray(), truncated);
        }
        catch
        {
            foreach (var fd in fds) fd.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Reads a reply and checks it answers <paramref name="request"/>: REPLY flag, version 1, and (when
    /// given) the payload size. Throws <see cref="InvalidDataException"/> otherwise, and on EOF.
    /// </summary>
    public VhostUserMessage ExpectReply(VhostUserRequest request, int? payloadSize = null, TimeSpan? timeout = null)
    {
        var m = ReceiveReply(timeout) ?? throw new InvalidDataException($"back-end closed the connection instead of answering {request}");
        try
        {
            if (m.Header.Request != (uint)request) throw new InvalidDataException($"expected a reply to {request}, got {m.Header}");
            if (!m.Header.IsReply) throw new InvalidDataException($"reply to {request} lacks the REPLY flag: {m.Header}");
            if (m.Header.Version != VhostUserFlags.Version) throw new InvalidDataException($"reply to {request} has version {m.Header.Version}");
            if (payloadSize is int n && m.Payload.Length != n)
                throw new InvalidDataException($"reply to {request} has {m.Payload.Length} payload bytes, expected {n}");
            return m;
        }
        catch
        {
            m.Dispose();
            throw;
        }
    }

    /// <summary>Reads the u64 REPLY_ACK answer (0 = success) to a request sent with NEED_REPLY.</summary>
    public ulong ReadAck(VhostUserRequest request, TimeSpan? timeout = null)
    {
        using var m = ExpectReply(request, VhostUserPayload.U64Size, timeout);
        return m.ReadU64();
    }

    /// <summary>
    /// Waits for the back-end to close the connection, discarding anything it still sends. True on EOF
    /// (or reset), false if the connection is still open after <paramref name="timeout"/>.
    /// </summary>
    public bool IsClosedByPeer(TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        var buffer = new byte[4096];
        var fds = new List<SafeFd>();
        while (true)
        {
            int remaining = RemainingMs(sw, timeout);
            if (!Socket.WaitReadable(remaining)) return false;
            int n;
            try
            {
                n = Socket.Receive(buffer, fds, out _);
            }
            catch (NativeException e) when (e.Errno == ECONNRESET)
            {
                return true;
            }
            finally
            {
                foreach (var fd in fds) fd.Dispose();
                fds.Clear();
            }
            if (n == 0) return true;
            if (remaining == 0) return false;
        }
    }

    /// <summary>True when nothing at all arrives within <paramref name="timeout"/> (no reply, no EOF).</summary>
    public bool IsSilent(TimeSpan timeout) => !Socket.WaitReadable((int)timeout.TotalMilliseconds);

    /// <summary>Shuts the socket both ways so the back-end sees EOF while the fd stays open.</summary>
    public void Shutdown() => Socket.Shutdown();

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_ownsSocket) Socket.Dispose();
    }

    private int ReadFully(Span<byte> buffer, List<SafeFd> fds, ref bool truncated, Stopwatch sw, TimeSpan limit)
    {
        int got = 0;
        while (got < buffer.Length)
        {
            if (!Socket.WaitReadable(RemainingMs(sw, limit)))
                throw new TimeoutException($"back-end sent {got} of {buffer.Length} expected bytes within {limit}");
            int n;
            try
            {
                n = Socket.Receive(buffer[got..], fds, out bool t);
                truncated |= t;
            }
            catch (NativeException e) when (e.Errno == ECONNRESET)
            {
                n = 0;
            }
            if (n == 0) return got;
            got += n;
        }
        return got;
    }

    private static int RemainingMs(Stopwatch sw, TimeSpan limit)
    {
        double left = (limit - sw.Elapsed).TotalMilliseconds;
        return left <= 0 ? 0 : (int)Math.Ceiling(Math.Min(left, int.MaxValue));
    }
}
