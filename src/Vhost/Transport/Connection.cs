using Microsoft.Extensions.Logging;
using Vhost.Device;
using Vhost.Interop;
using Vhost.Protocol;

namespace Vhost.Transport;

/// <summary>
/// Reads messages from one front-end connection on its own thread and hands them to the device. A
/// framing error or a refused request without REPLY_ACK ends this connection only; every other device
/// has its own thread and keeps running.
/// </summary>
internal sealed class Connection
{
    private readonly UnixSocket _socket;
    private readonly ILogger _logger;
    private readonly VhostDevice _device;
    private readonly byte[] _payload = new byte[MessageHeader.MaxPayload];
    private readonly ReplyBuffer _reply = new();
    private readonly List<SafeFd> _received = [];
    private readonly List<SafeFd?> _fds = [];
    private readonly Thread _thread;

    public Connection(UnixSocket socket, VhostSocketOptions options, ILogger logger)
    {
        _socket = socket;
        _logger = logger;
        _device = new VhostDevice(options, logger, RequestClose);
        _thread = new Thread(Run) { IsBackground = true, Name = $"vhost-conn-{_device.Id}" };
    }

    public VhostDevice Device => _device;

    public Thread Thread => _thread;

    /// <summary>The reader has stopped and the device is being released.</summary>
    public bool Ending => _ending;

    private volatile bool _ending;

    /// <summary>Runs when the connection has ended and the device is released.</summary>
    public event Action<Connection>? Closed;

    public void Start() => _thread.Start();

    public void RequestClose() => _socket.Shutdown();

    private void Run()
    {
        string reason = "front-end closed the connection";
        try
        {
            while (true)
            {
                var error = ReadMessage(out var header, out int size);
                if (error != null)
                {
                    reason = error;
                    if (error != EndOfStream) _logger.LogError("device {Id} ({Path}): {Error}; closing the connection", _device.Id, _device.SocketPath, error);
                    break;
                }
                if (!Dispatch(header, size, out reason)) break;
                if (_device.FaultReason is { } f)
                {
                    reason = f;
                    break;
                }
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            reason = e.Message;
            _logger.LogWarning("device {Id}: connection error: {Error}", _device.Id, e.Message);
        }
        catch (Exception e)
        {
            reason = e.Message;
            _logger.LogError(e, "device {Id}: unexpected error in message handling; closing the connection", _device.Id);
        }
        finally
        {
            _ending = true;
            DisposeFds();
            _device.Close();
            _socket.Dispose();
            _logger.LogInformation("device {Id} ({Path}) disconnected: {Reason}", _device.Id, _device.SocketPath, reason);
            Closed?.Invoke(this);
        }
    }

    private const string EndOfStream = "end of stream";

    /// <summary>Reads one whole message; fds may arrive with any of its bytes.</summary>
    private string? ReadMessage(out MessageHeader header, out int size)
    {
        header = default;
        size = 0;
        DisposeFds();
        Span<byte> h = stackalloc byte[MessageHeader.Length];
        int got = ReadExactly(h, allowEof: true);
        if (got == 0) return EndOfStream;
        if (got < 0) return "connection ended inside a message header";
        header = MessageHeader.Read(h);
        if ((header.Flags & MessageHeader.VersionMask) != MessageHeader.Version)
            return $"message {header.Request} has version {header.Flags & MessageHeader.VersionMask}, expected 1";
        if ((header.Flags & MessageHeader.ReplyFlag) != 0)
            return $"message {header.Request} has the reply flag set";
        if (header.Size > MessageHeader.MaxPayload)
            return $"message {header.Request} claims a {header.Size}-byte payload (at most {MessageHeader.MaxPayload})";
        size = (int)header.Size;
        if (size > 0 && ReadExactly(_payload.AsSpan(0, size), allowEof: false) < 0)
            return $"connection ended inside the payload of message {header.Request}";
        if (_received.Count > UnixSocket.MaxFds || _truncated)
            return $"message {header.Request} carries more than {UnixSocket.MaxFds} fds";
        foreach (var fd in _received) _fds.Add(fd);
        _received.Clear();
        return null;
    }

    private bool _truncated;

    private int ReadExactly(Span<byte> buffer, bool allowEof)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n = _socket.Receive(buffer[total..], _received, out bool truncated);
            _truncated |= truncated;
            if (n == 0) return total == 0 && allowEof ? 0 : -1;
            total += n;
        }
        return total;
    }

    private bool Dispatch(MessageHeader header, int size, out string reason)
    {
        reason = "";
        var spec = RequestTable.Get(header.Request);
        if (spec is not { } s || s.Request == VhostUserRequest.None)
        {
            reason = $"unknown request {header.Request}";
            _logger.LogError("device {Id} ({Path}): {Reason}; closing the connection", _device.Id, _device.SocketPath, reason);
            return false;
        }
        if (s.CheckFraming(size, _fds.Count) is { } framing)
        {
            reason = framing;
            _logger.LogError("device {Id} ({Path}): {Reason}; closing the connection", _device.Id, _device.SocketPath, framing);
            return false;
        }
        _reply.Clear();
        var outcome = _device.Handle(header, _payload.AsSpan(0, size), _fds, _reply);
        bool ack = header.NeedReply && !s.HasReply && _device.HasProtocolFeature(ProtocolFeature.ReplyAck);
        switch (outcome.Kind)
        {
            case OutcomeKind.Close:
                reason = outcome.Error!;
                _logger.LogError("device {Id} ({Path}): {Request}: {Reason}; closing the connection", _device.Id, _device.SocketPath, s.Request, reason);
                return false;
            case OutcomeKind.Failed when s.HasReply || !ack:
                reason = outcome.Error!;
                _logger.LogError("device {Id} ({Path}): {Request} refused: {Reason}; closing the connection", _device.Id, _device.SocketPath, s.Request, reason);
                return false;
            case OutcomeKind.Failed:
                _logger.LogError("device {Id} ({Path}): {Request} refused: {Reason}", _device.Id, _device.SocketPath, s.Request, outcome.Error);
                SendReply(header, 1);
                break;
            default:
                if (s.HasReply) SendReply(header, _reply.Data.AsSpan(0, _reply.Length), _reply.Fd);
                else if (ack) SendReply(header, 0);
                break;
        }
        _device.CheckReady();
        return true;
    }

    private void SendReply(MessageHeader request, ulong ack)
    {
        Span<byte> v = stackalloc byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(v, ack);
        SendReply(request, v);
    }

    private void SendReply(MessageHeader request, ReadOnlySpan<byte> payload, SafeFd? fd = null)
    {
        var buf = new byte[MessageHeader.Length + payload.Length];
        new MessageHeader(request.Request, MessageHeader.Version | MessageHeader.ReplyFlag, (uint)payload.Length).Write(buf);
        payload.CopyTo(buf.AsSpan(MessageHeader.Length));
        if (fd != null) _socket.Send(buf, [fd]);
        else _socket.Send(buf);
        // our copy of a sent fd is not needed once the peer has its own
        _reply.Clear();
    }

    private void DisposeFds()
    {
        foreach (var fd in _fds) fd?.Dispose();
        _fds.Clear();
        foreach (var fd in _received) fd.Dispose();
        _received.Clear();
        _truncated = false;
    }
}
