using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Vhost.Device;
using Vhost.Interop;

namespace Vhost.Transport;

/// <summary>
/// One registered socket path: rte_vhost_driver_register + _start + _unregister. In server mode every
/// accepted connection is a new device; in client mode it connects, and reconnects every second after
/// the front-end goes away unless reconnection is off.
/// </summary>
public sealed class VhostUserSocket : IDisposable
{
    private readonly VhostSocketOptions _options;
    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private readonly List<Connection> _connections = [];
    private readonly CancellationTokenSource _stop = new();
    private UnixSocket? _listener;
    private Thread? _thread;
    private bool _started;
    private bool _closing;

    public VhostUserSocket(VhostSocketOptions options)
    {
        ArgumentException.ThrowIfNullOrEmpty(options.Path);
        if (options.MaxQueues is < 1 or > 256) throw new ArgumentOutOfRangeException(nameof(options), "MaxQueues must be 1..256");
        if (options.MaxConnections is < 1) throw new ArgumentOutOfRangeException(nameof(options), "MaxConnections must be at least 1 (or null)");
        _options = options;
        _logger = (options.LoggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Vhost");
    }

    public string Path => _options.Path;

    public VhostSocketOptions Options => _options;

    /// <summary>rte_vhost_driver_get_features.</summary>
    public ulong Features => _options.Features;

    /// <summary>rte_vhost_driver_set_features: only before <see cref="Start"/>.</summary>
    public void SetFeatures(ulong features) { EnsureNotStarted(); _options.Features = features; }

    /// <summary>rte_vhost_driver_enable_features.</summary>
    public void EnableFeatures(ulong features) { EnsureNotStarted(); _options.Features |= features; }

    /// <summary>rte_vhost_driver_disable_features.</summary>
    public void DisableFeatures(ulong features) { EnsureNotStarted(); _options.Features &= ~features; }

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
        if (_options.Client)
        {
            _thread = new Thread(ClientLoop) { IsBackground = true, Name = $"vhost-client {Path}" };
        }
        else
        {
            RemoveStaleSocket();
            _listener = UnixSocket.Listen(Path);
            _thread = new Thread(AcceptLoop) { IsBackground = true, Name = $"vhost-accept {Path}" };
        }
        _thread.Start();
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

    private void AcceptLoop()
    {
        while (!_stop.IsCancellationRequested)
        {
            UnixSocket? s;
            try
            {
                s = _listener!.Accept();
            }
            catch (IOException e)
            {
                _logger.LogError("accept on {Path} failed: {Error}", Path, e.Message);
                Thread.Sleep(100);
                continue;
            }
            if (s == null || _stop.IsCancellationRequested)
            {
                s?.Dispose();
                break;
            }
            if (!HasRoom())
            {
                _logger.LogError("{Path}: connection refused: this socket serves at most {Max} front-end(s) at a time", Path, _options.MaxConnections);
                s.Dispose();
                continue;
            }
            if (Run(s) == null) break;
        }
    }

    /// <summary>Whether MaxConnections allows one more; a connection already ending is waited for, not counted.</summary>
    private bool HasRoom()
    {
        if (_options.MaxConnections is not { } max) return true;
        Connection[] ending;
        lock (_lock)
        {
            if (_connections.Count < max) return true;
            ending = [.. _connections.Where(c => c.Ending)];
        }
        // a front-end that reconnects right after leaving finds its old device still releasing: not a second one
        foreach (var c in ending) c.Thread.Join(TimeSpan.FromSeconds(10));
        lock (_lock) return _connections.Count < max;
    }

    private void ClientLoop()
    {
        bool announced = false;
        while (!_stop.IsCancellationRequested)
        {
            var s = UnixSocket.TryConnect(Path, out int errno);
            if (s == null)
            {
                if (!announced)
                {
                    _logger.LogInformation("{Path}: front-end not there yet ({Error}); retrying every {Interval}",
                        Path, Libc.Describe(errno), _options.ReconnectInterval);
                    announced = true;
                }
                _stop.Token.WaitHandle.WaitOne(_options.ReconnectInterval);
                continue;
            }
            announced = false;
            var conn = Run(s);
            if (conn == null) break;
            conn.Thread.Join();
            if (!_options.Reconnect) break;
            _stop.Token.WaitHandle.WaitOne(_options.ReconnectInterval);
        }
    }

    /// <summary>Starts a device on <paramref name="s"/>; null (and the socket closed) once Dispose has begun.</summary>
    private Connection? Run(UnixSocket s)
    {
        Connection conn;
        lock (_lock)
        {
            // under the lock Dispose collects under: a connection is either in its list, started, or never made
            if (_closing)
            {
                s.Dispose();
                return null;
            }
            conn = new Connection(s, _options, _logger);
            conn.Closed += c =>
            {
                lock (_lock) _connections.Remove(c);
                Disconnected?.Invoke(c.Device);
            };
            _connections.Add(conn);
            conn.Start();
        }
        _logger.LogInformation("{Path}: new connection, device {Id}", Path, conn.Device.Id);
        return conn;
    }

    /// <summary>rte_vhost_driver_unregister: closes every device and removes the socket file.</summary>
    public void Dispose()
    {
        if (_stop.IsCancellationRequested) return;
        _stop.Cancel();
        _listener?.Shutdown();
        Connection[] conns;
        lock (_lock)
        {
            _closing = true;
            conns = [.. _connections];
        }
        foreach (var c in conns) c.RequestClose();
        foreach (var c in conns) c.Thread.Join(TimeSpan.FromSeconds(10));
        bool stopped = _thread?.Join(TimeSpan.FromSeconds(5)) ?? true;
        // only the socket we bound is ours to remove: a Start that refused the path leaves it alone
        if (_listener != null && FileDescriptors.Lookup(Path) == PathEntry.Socket) File.Delete(Path);
        _listener?.Dispose();
        // a loop thread still inside a callback waits on _stop when it comes back: it must outlive it
        if (stopped) _stop.Dispose();
        _logger.LogInformation("vhost-user socket {Path} unregistered", Path);
    }

    private void EnsureNotStarted()
    {
        if (_started) throw new InvalidOperationException("features can only change before Start");
    }
}
