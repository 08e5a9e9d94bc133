using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Vhost.Device;
using Vhost.Interop;
using Vhost.Runtime;

namespace Vhost.Transport;

/// <summary>
/// One registered socket path: rte_vhost_driver_register + _start + _unregister. In server mode every
/// accepted connection is a new device; in client mode it connects, and reconnects every second after
/// the front-end goes away unless reconnection is off. The listener and every connection live on the
/// reactors of the socket's <see cref="VhostRuntime"/> (no thread of its own).
/// </summary>
public sealed class VhostUserSocket : IDisposable
{
    private readonly VhostSocketOptions _options;
    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private readonly List<Connection> _connections = [];
    private readonly Queue<UnixSocket> _waiting = new();
    private readonly VhostRuntime _runtime;
    private Reactor? _reactor;
    private UnixSocket? _listener;
    private ulong _listenToken;
    private volatile bool _stopping;
    private bool _started;
    private bool _announced;

    /// <summary>A socket that will serve devices with <paramref name="options"/> once started (rte_vhost_driver_register); throws on options out of range.</summary>
    public VhostUserSocket(VhostSocketOptions options)
    {
        ArgumentException.ThrowIfNullOrEmpty(options.Path);
        if (options.MaxQueues is < 1 or > 256) throw new ArgumentOutOfRangeException(nameof(options), "MaxQueues must be 1..256");
        if (options.MaxConnections is < 1) throw new ArgumentOutOfRangeException(nameof(options), "MaxConnections must be at least 1 (or null)");
        _options = options;
        _logger = (options.LoggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Vhost");
        _runtime = options.Runtime ?? VhostRuntime.Shared;
    }

    /// <summary>The socket's path.</summary>
    public string Path => _options.Path;

    /// <summary>The options the socket was made with.</summary>
    public VhostSocketOptions Options => _options;

    /// <summary>rte_vhost_driver_get_features.</summary>
    public ulong Features => _options.Features;

    /// <summary>rte_vhost_driver_set_features: only before <see cref="Start"/>.</summary>
    public void SetFeatures(ulong features) { EnsureNotStarted(); _options.Features = features; }

    /// <summary>rte_vhost_driver_enable_features.</summary>
    public void EnableFeatures(ulong features) { EnsureNotStarted(); _options.Features |= features; }

    /// <summary>rte_vhost_driver_disable_features.</summary>
    public void DisableFeatures(ulong features) { EnsureNotStarted(); _options.Features &= ~features; }

    /// <summary>rte_vhost_driver_get_protocol_features.</summary>
    public ulong ProtocolFeatures => _options.ProtocolFeatures;

    /// <summary>rte_vhost_driver_set_protocol_features.</summary>
    public void SetProtocolFeatures(ulong features) { EnsureNotStarted(); _options.ProtocolFeatures = features; }

    /// <summary>The devices currently connected through this socket.</summary>
    public IReadOnlyList<VhostDevice> Devices
    {
        get
        {
            lock (_lock) return _connections.Select(c => c.Device).ToArray();
        }
    }

    /// <summary>Raised (on a connection thread) when a connection ends; mostly for tests and tools.</summary>
    public event Action<VhostDevice>? Disconnected;

    /// <summary>rte_vhost_driver_start.</summary>
    public void Start()
    {
        lock (_lock)
        {
            if (_started) throw new InvalidOperationException($"{Path} already started");
            _started = true;
        }
        _reactor = _runtime.Assign();
        if (_options.Client)
        {
            _reactor.Post(TryConnect);
        }
        else
        {
            RemoveStaleSocket();
            _listener = UnixSocket.Listen(Path);
            _listener.SetNonBlocking();
            var listener = _listener;
            _reactor.Invoke(() =>
            {
                _listenToken = _reactor.Add(listener.Handle, new AcceptWatch(this));
                if (_listenToken == 0) throw new IOException($"{Path}: the listening socket cannot be watched");
            }, TimeSpan.FromSeconds(10));
        }
        _logger.LogInformation("vhost-user socket {Path} started ({Mode})", Path, _options.Client ? "client" : "server");
    }

    /// <summary>A socket file left by an earlier run is replaced; anything else at the path is not ours to delete.</summary>
    private void RemoveStaleSocket()
    {
        switch (FileDescriptors.Lookup(Path))
        {
            case PathEntry.Socket:
                File.Delete(Path);
                break;
            case PathEntry.Other:
                throw new IOException($"{Path} exists and is not a socket; refusing to replace it");
        }
    }

    private sealed class AcceptWatch(VhostUserSocket owner) : IReadyHandler
    {
        public void OnReady(uint events) => owner.AcceptAll();
    }

    /// <summary>On the listener's reactor: every waiting connection becomes a device.</summary>
    private void AcceptAll()
    {
        while (!_stopping && _listener is { } l)
        {
            var s = l.TryAccept(out int errno);
            if (s == null)
            {
                if (errno is not (Libc.EAGAIN or Libc.EINTR)) _logger.LogError("accept on {Path} failed: {Error}", Path, Libc.Describe(errno));
                return;
            }
            Admit(s);
        }
    }

    /// <summary>
    /// MaxConnections: one more front-end is refused (one line, closed), unless a connection is still ending: a
    /// front-end that reconnects right after leaving finds its old device releasing, and waits for it, not refused.
    /// </summary>
    private void Admit(UnixSocket s)
    {
        if (_options.MaxConnections is not { } max)
        {
            Run(s);
            return;
        }
        string verdict;
        lock (_lock)
        {
            int live = _connections.Count(c => !c.Ending);
            verdict = live + _waiting.Count >= max ? "refuse" : _connections.Count + _waiting.Count >= max ? "wait" : "run";
            if (verdict == "wait") _waiting.Enqueue(s);
        }
        if (verdict == "run")
        {
            Run(s);
        }
        else if (verdict == "refuse")
        {
            _logger.LogError("{Path}: connection refused: this socket serves at most {Max} front-end(s) at a time", Path, max);
            s.Dispose();
        }
    }

    /// <summary>A connection ended: a front-end waiting for its place gets it.</summary>
    private void AdmitWaiting()
    {
        UnixSocket? next = null;
        lock (_lock)
        {
            if (_waiting.Count > 0 && _connections.Count < (_options.MaxConnections ?? int.MaxValue)) next = _waiting.Dequeue();
        }
        if (next == null) return;
        if (_stopping) next.Dispose();
        else Run(next);
    }

    /// <summary>Client mode, on the socket's reactor: one connection attempt, and another after the interval if it failed.</summary>
    private void TryConnect()
    {
        if (_stopping) return;
        var s = UnixSocket.TryConnect(Path, out int errno);
        if (s == null)
        {
            if (!_announced)
            {
                _logger.LogInformation("{Path}: front-end not there yet ({Error}); retrying every {Interval}",
                    Path, Libc.Describe(errno), _options.ReconnectInterval);
                _announced = true;
            }
            _reactor!.Schedule(_options.ReconnectInterval, TryConnect);
            return;
        }
        _announced = false;
        Run(s);
    }

    private void Run(UnixSocket s)
    {
        var conn = new Connection(s, _options, _logger, _runtime.Assign());
        conn.Closed += c =>
        {
            lock (_lock) _connections.Remove(c);
            Disconnected?.Invoke(c.Device);
            if (_options.MaxConnections != null) _reactor!.Post(AdmitWaiting);
            if (_options.Client && _options.Reconnect) _reactor!.Post(() => _reactor.Schedule(_options.ReconnectInterval, TryConnect));
        };
        lock (_lock) _connections.Add(conn);
        _logger.LogInformation("{Path}: new connection, device {Id}", Path, conn.Device.Id);
        conn.Start();
    }

    /// <summary>rte_vhost_driver_unregister: closes every device and removes the socket file.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_stopping) return;
            _stopping = true;
        }
        if (_reactor != null)
        {
            // on the reactor, so no accept or connect attempt runs after this
            _reactor.Invoke(() =>
            {
                if (_listener != null) _reactor.Remove(ref _listenToken, _listener.Handle);
            }, TimeSpan.FromSeconds(10));
            _reactor.AddLoad(-1);
        }
        Connection[] conns;
        lock (_lock) conns = [.. _connections];
        foreach (var c in conns) c.RequestClose();
        foreach (var c in conns)
        {
            // a device of this socket may share the caller's reactor (Dispose from a callback): do not wait on ourselves
            if (!c.Device.Reactor?.IsCurrentThread ?? true) c.Ended.WaitOne(TimeSpan.FromSeconds(10));
        }
        lock (_lock)
        {
            while (_waiting.Count > 0) _waiting.Dequeue().Dispose();
        }
        // only the socket we bound is ours to remove: a Start that refused the path leaves it alone
        if (_listener != null && FileDescriptors.Lookup(Path) == PathEntry.Socket) File.Delete(Path);
        _listener?.Dispose();
        _logger.LogInformation("vhost-user socket {Path} unregistered", Path);
    }

    private void EnsureNotStarted()
    {
        if (_started) throw new InvalidOperationException("features can only change before Start");
    }
}
