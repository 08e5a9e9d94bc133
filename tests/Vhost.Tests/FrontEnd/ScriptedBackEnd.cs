using System.Collections.Concurrent;
using Vhost.Interop;
using Vhost.Protocol;
using Vhost.Testing.FrontEnd;

namespace Vhost.Tests.FrontEnd;

/// <summary>
/// A minimal stand-in back-end for testing the test kit itself: records every message (with its fds) and
/// answers the requests that need an answer with configured values. Not a model of the real back-end.
/// </summary>
internal sealed class ScriptedBackEnd : IDisposable
{
    private readonly UnixSocket _socket;
    private readonly Thread _thread;
    private readonly ConcurrentQueue<VhostUserMessage> _received = new();
    private ulong _status;

    public ScriptedBackEnd(UnixSocket socket)
    {
        _socket = socket;
        _thread = new Thread(Loop) { IsBackground = true, Name = "scripted back-end" };
    }

    public ulong Features { get; init; } =
        VirtioFeature.Bit(VirtioFeature.Version1) | VirtioFeature.Bit(VirtioFeature.ProtocolFeatures) |
        VirtioFeature.Bit(VirtioFeature.RingEventIdx) | VirtioFeature.Bit(VirtioFeature.RingPacked) |
        VirtioFeature.Bit(VirtioFeature.LogAll) | VirtioFeature.Bit(VirtioFeature.AccessPlatform);

    public ulong ProtocolFeatures { get; init; } = DeviceSetupOptions.ProtocolBits(
        ProtocolFeature.Mq, ProtocolFeature.ReplyAck, ProtocolFeature.Config, ProtocolFeature.LogShmfd, ProtocolFeature.Status);

    public ulong QueueNum { get; init; } = 4;

    public uint VringBaseReply { get; init; } = 42;

    /// <summary>Requests answered with a non-zero ack when NEED_REPLY is set.</summary>
    public HashSet<VhostUserRequest> Nack { get; init; } = [];

    public IReadOnlyCollection<VhostUserMessage> Received => _received;

    public List<VhostUserMessage> ReceivedList => [.. _received];

    /// <summary>Set once the front-end's side reached end of stream (or a read failed).</summary>
    public ManualResetEventSlim Ended { get; } = new();

    public ScriptedBackEnd Start()
    {
        _thread.Start();
        return this;
    }

    /// <summary>Waits until <paramref name="count"/> messages were received.</summary>
    public bool WaitFor(int count, TimeSpan timeout)
    {
        var until = DateTime.UtcNow + timeout;
        while (_received.Count < count)
        {
            if (DateTime.UtcNow > until) return false;
            Thread.Sleep(2);
        }
        return true;
    }

    private void Loop()
    {
        try
        {
            while (true)
            {
                var m = ReadMessage();
                if (m is null) return;
                _received.Enqueue(m);
                Answer(m);
            }
        }
        catch (Exception e) when (e is NativeException or EndOfStreamException)
        {
            // The test closed the connection in the middle of something: that ends the script.
        }
        finally
        {
            Ended.Set();
        }
    }

    private void Answer(VhostUserMessage m)
    {
        var r = (VhostUserRequest)m.Header.Request;
        byte[]? reply = r switch
        {
            VhostUserRequest.GetFeatures => VhostUserPayload.U64(Features),
            VhostUserRequest.GetProtocolFeatures => VhostUserPayload.U64(ProtocolFeatures),
            VhostUserRequest.GetQueueNum => VhostUserPayload.U64(QueueNum),
            VhostUserRequest.GetMaxMemSlots => VhostUserPayload.U64(32),
            VhostUserRequest.GetStatus => VhostUserPayload.U64(_status),
            VhostUserRequest.GetVringBase => VhostUserPayload.VringState(VhostUserPayload.ReadVringState(m.Payload).Index, VringBaseReply),
            VhostUserRequest.GetConfig => ConfigReply(m.Payload),
            VhostUserRequest.SetLogBase or VhostUserRequest.IotlbMsg => VhostUserPayload.U64(0),
            _ => null,
        };
        if (r == VhostUserRequest.SetStatus) _status = m.ReadU64();
        if (reply is null && m.Header.NeedsReply) reply = VhostUserPayload.U64(Nack.Contains(r) ? 1UL : 0UL);
        if (reply is not null)
            _socket.Send(VhostUserMessage.Encode(m.Header.Request, VhostUserFlags.Version | VhostUserFlags.Reply, reply));
    }

    private static byte[] ConfigReply(byte[] request)
    {
        var c = VhostUserPayload.ReadConfig(request);
        var data = new byte[c.Size];
        for (int i = 0; i < data.Length; i++) data[i] = (byte)(c.Offset + i);
        return VhostUserPayload.Config(c.Offset, c.Size, c.Flags, data);
    }

    private VhostUserMessage? ReadMessage()
    {
        var fds = new List<SafeFd>();
        var head = new byte[VhostUserHeader.Length];
        if (!ReadFully(head, fds, atStart: true)) return null;
        var h = VhostUserHeader.Read(head);
        var payload = new byte[h.Size];
        ReadFully(payload, fds, atStart: false);
        return new VhostUserMessage(h, payload, fds.ToArray());
    }

    private bool ReadFully(Span<byte> buffer, List<SafeFd> fds, bool atStart)
    {
        int got = 0;
        while (got < buffer.Length)
        {
            int n = _socket.Receive(buffer[got..], fds, out _);
            if (n == 0)
            {
                if (atStart && got == 0) return false;
                throw new EndOfStreamException();
            }
            got += n;
        }
        return true;
    }

    public void Dispose()
    {
        _socket.Shutdown();
        _thread.Join(TimeSpan.FromSeconds(5));
        _socket.Dispose();
        foreach (var m in _received) m.Dispose();
        Ended.Dispose();
    }
}
