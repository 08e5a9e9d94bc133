using Microsoft.Extensions.Logging;
using Vhost.Device;
using Vhost.Interop;
using Vhost.Protocol;
using Vhost.Runtime;

namespace Vhost.Transport;

/// <summary>
/// One front-end connection on its device's reactor: the socket is non-blocking, messages are gathered as their
/// bytes arrive (a front-end that sends half a message holds up nobody), and each whole message goes to the
/// device. A framing error or a refused request without REPLY_ACK ends this connection only. A GET_VRING_BASE
/// that waits for work in flight pauses reading until its reply is sent.
/// </summary>
internal sealed class Connection : IReadyHandler
{
    private readonly UnixSocket _socket;
    private readonly ILogger _logger;
    private readonly VhostDevice _device;
    private readonly Reactor _reactor;
    private readonly byte[] _head = new byte[MessageHeader.Length];
    private readonly byte[] _payload = new byte[MessageHeader.MaxPayload];
    private readonly ReplyBuffer _reply = new();
    private readonly List<SafeFd> _received = [];
    private readonly List<SafeFd?> _fds = [];
    private readonly ManualResetEventSlim _ended = new(false);
    private ulong _token;
    private MessageHeader _header;
    private bool _haveHeader;
    private int _have;
    private bool _truncated;
    private bool _paused;
    private bool _closing;
    private MessageHeader _pendingHeader;

    public Connection(UnixSocket socket, VhostSocketOptions options, ILogger logger, Reactor reactor)
    {
        _socket = socket;
        _logger = logger;
        _reactor = reactor;
        _device = new VhostDevice(options, logger, RequestClose);
    }

    public VhostDevice Device => _device;

    /// <summary>The connection has stopped reading and its device is being released.</summary>
    public bool Ending => Volatile.Read(ref _closing);

    /// <summary>Set once the connection has ended and its device is released.</summary>
    public WaitHandle Ended => _ended.WaitHandle;

    /// <summary>Runs (on the reactor) when the connection has ended and the device is released.</summary>
    public event Action<Connection>? Closed;

    /// <summary>Starts reading on the reactor.</summary>
    public void Start() => _reactor.Post(() =>
    {
        _device.AttachToReactor(_reactor);
        if (!_socket.SetNonBlocking() || (_token = _reactor.Add(_socket.Handle, this)) == 0)
        {
            Close("the connection's socket cannot be watched");
            return;
        }
        // bytes that arrived before the watch are seen at once: epoll is level-triggered
    });

    /// <summary>Asks for the connection to end (any thread); the device is released on the reactor.</summary>
    public void RequestClose() => _reactor.Post(() => Close("closed by the back-end"));

    void IReadyHandler.OnReady(uint events)
    {
        try
        {
            ReadAvailable();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            _logger.LogWarning("device {Id}: connection error: {Error}", _device.Id, e.Message);
            Close(e.Message);
        }
        catch (Exception e)
        {
            _logger.LogError(e, "device {Id}: unexpected error in message handling; closing the connection", _device.Id);
            Close(e.Message);
        }
    }

    private const string EndOfStream = "front-end closed the connection";

    /// <summary>Messages one turn handles; the rest wait for the reactor's next turn, after the other devices had theirs.</summary>
    private const int MessagesPerTurn = 16;

    /// <summary>Reads and handles the whole messages the socket holds, until it would block or the turn's budget is spent.</summary>
    private void ReadAvailable()
    {
        // level-triggered: whatever is left after the budget makes the socket ready again on the next turn
        for (int handled = 0; handled < MessagesPerTurn && !_paused && !_closing; handled++)
        {
            var (state, error) = ReadStep();
            if (state == Step.WouldBlock) return;
            if (state == Step.Failed)
            {
                if (error != EndOfStream) _logger.LogError("device {Id} ({Path}): {Error}; closing the connection", _device.Id, _device.SocketPath, error);
                Close(error!);
                return;
            }
            if (!Dispatch(_header, (int)_header.Size, out var reason))
            {
                Close(reason);
                return;
            }
            if (_device.FaultReason is { } f)
            {
                Close(f);
                return;
            }
        }
    }

    private enum Step
    {
        WouldBlock,
        Message,
        Failed,
    }

    /// <summary>Reads what is there of the current message; exactly up to its end, so the next one's fds stay with it.</summary>
    private (Step, string?) ReadStep()
    {
        while (true)
        {
            Span<byte> want = _haveHeader ? _payload.AsSpan(_have, (int)_header.Size - _have) : _head.AsSpan(_have);
            int n = _socket.TryReceive(want, _received, out bool truncated);
            _truncated |= truncated;
            if (n < 0) return (Step.WouldBlock, null);
            if (n == 0)
            {
                if (!_haveHeader && _have == 0) return (Step.Failed, EndOfStream);
                return (Step.Failed, _haveHeader
                    ? $"connection ended inside the payload of message {_header.Request}"
                    : "connection ended inside a message header");
            }
            _have += n;
            if (!_haveHeader)
            {
                if (_have < MessageHeader.Length) continue;
                _header = MessageHeader.Read(_head);
                if ((_header.Flags & MessageHeader.VersionMask) != MessageHeader.Version)
                    return (Step.Failed, $"message {_header.Request} has version {_header.Flags & MessageHeader.VersionMask}, expected 1");
                if ((_header.Flags & MessageHeader.ReplyFlag) != 0)
                    return (Step.Failed, $"message {_header.Request} has the reply flag set");
                if (_header.Size > MessageHeader.MaxPayload)
                    return (Step.Failed, $"message {_header.Request} claims a {_header.Size}-byte payload (at most {MessageHeader.MaxPayload})");
                _haveHeader = true;
                _have = 0;
            }
            if (_have < (int)_header.Size) continue;
            _haveHeader = false;
            _have = 0;
            bool tooMany = _received.Count > UnixSocket.MaxFds || _truncated;
            _truncated = false;
            if (tooMany) return (Step.Failed, $"message {_header.Request} carries more than {UnixSocket.MaxFds} fds");
            foreach (var fd in _received) _fds.Add(fd);
            _received.Clear();
            return (Step.Message, null);
        }
    }

    private bool Dispatch(MessageHeader header, int size, out string reason)
    {
        reason = "";
        // postcopy: QEMU's acknowledgement of our memory reply has a framing of its own (VhostDevice.Postcopy.cs)
        if (_device.IsPostcopyAck(header, _fds.Count))
        {
            var acked = _device.PostcopyAck(_payload.AsSpan(0, size));
            DisposeFds();
            if (acked.Kind != OutcomeKind.Ok)
            {
                reason = acked.Error!;
                _logger.LogError("device {Id} ({Path}): {Reason}; closing the connection", _device.Id, _device.SocketPath, reason);
                return false;
            }
            _device.CheckReady();
            return true;
        }
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
        DisposeFds();
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
            case OutcomeKind.Pending:
                Pause(header);
                return true;
            default:
                if (s.HasReply || _reply.Forced) SendReply(header, _reply.Data.AsSpan(0, _reply.Length), _reply.Fd);
                else if (ack) SendReply(header, 0);
                break;
        }
        _device.CheckReady();
        return true;
    }

    /// <summary>The reply waits for the device (work in flight); nothing more is read until it is sent.</summary>
    private void Pause(MessageHeader header)
    {
        _paused = true;
        _pendingHeader = header;
        _reactor.SetInterest(_token, _socket.Handle, input: false);
        if (!_device.HasPendingReply(Resume)) Resume();
    }

    private void Resume()
    {
        if (_closing) return;
        try
        {
            var reply = _device.PendingReply;
            SendReply(_pendingHeader, reply.Data.AsSpan(0, reply.Length));
            reply.Clear();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            Close(e.Message);
            return;
        }
        _paused = false;
        if (_device.FaultReason is { } f)
        {
            Close(f);
            return;
        }
        _device.CheckReady();
        _reactor.SetInterest(_token, _socket.Handle, input: true);
    }

    private void SendReply(MessageHeader request, ulong ack)
    {
        Span<byte> v = stackalloc byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(v, ack);
        SendReply(request, v);
    }

    private void SendReply(MessageHeader request, ReadOnlySpan<byte> payload, SafeFd? fd = null)
    {
        Span<byte> buf = stackalloc byte[MessageHeader.Length + payload.Length];
        new MessageHeader(request.Request, MessageHeader.Version | MessageHeader.ReplyFlag, (uint)payload.Length).Write(buf);
        payload.CopyTo(buf[MessageHeader.Length..]);
        // non-blocking: a front-end that stops reading its replies fails the send and loses its connection
        if (fd != null) _socket.Send(buf, [fd]);
        else _socket.Send(buf);
        // our copy of a sent fd is not needed once the peer has its own
        _reply.Clear();
    }

    /// <summary>Ends the connection (reactor thread): stop reading, then release the device once its work is done.</summary>
    private void Close(string reason)
    {
        if (_closing) return;
        _closing = true;
        _reactor.Remove(ref _token, _socket.Handle);
        DisposeFds();
        foreach (var fd in _received) fd.Dispose();
        _received.Clear();
        if (_device.Reactor == null)
        {
            Finish(reason);
            return;
        }
        _device.BeginClose(() => Finish(reason));
    }

    private void Finish(string reason)
    {
        _socket.Dispose();
        _logger.LogInformation("device {Id} ({Path}) disconnected: {Reason}", _device.Id, _device.SocketPath, reason);
        try
        {
            Closed?.Invoke(this);
        }
        finally
        {
            _ended.Set();
        }
    }

    private void DisposeFds()
    {
        foreach (var fd in _fds) fd?.Dispose();
        _fds.Clear();
    }
}
