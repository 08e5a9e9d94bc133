using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Vhost.Runtime;

/// <summary>How many event threads a runtime runs.</summary>
public sealed class VhostRuntimeOptions
{
    /// <summary>Reactor threads: every socket, kick fd and completion fd of the devices is watched by one of them.</summary>
    public int EventThreads { get; init; } = 1;

    /// <summary>Where the reactors' logger comes from; null: no logging.</summary>
    public ILoggerFactory? LoggerFactory { get; init; }
}

/// <summary>
/// The event loops that serve devices: a few reactor threads own every connection's socket, every event-mode
/// kick fd and every completion fd, and run each device's control plane and event-driven handlers. A device stays
/// on one reactor for its life. One runtime serves any number of sockets and devices with a fixed number of
/// threads; <see cref="Shared"/> is the one sockets use when given none.
/// </summary>
public sealed class VhostRuntime : IDisposable
{
    private static readonly Lazy<VhostRuntime> SharedRuntime = new(() => new VhostRuntime(new VhostRuntimeOptions()));

    private readonly Reactor[] _reactors;

    /// <summary>Starts the runtime's event threads.</summary>
    public VhostRuntime(VhostRuntimeOptions? options = null)
    {
        options ??= new VhostRuntimeOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(options.EventThreads, 1);
        var logger = (options.LoggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Vhost.Runtime");
        _reactors = new Reactor[options.EventThreads];
        for (int i = 0; i < _reactors.Length; i++) _reactors[i] = new Reactor($"vhost-event{i}", logger);
    }

    /// <summary>The process-wide runtime with one event thread.</summary>
    public static VhostRuntime Shared => SharedRuntime.Value;

    /// <summary>How many reactor threads the runtime runs.</summary>
    public int EventThreads => _reactors.Length;

    /// <summary>The least loaded reactor, for a new socket or device.</summary>
    internal Reactor Assign()
    {
        var r = _reactors.MinBy(r => r.Load)!;
        r.AddLoad(1);
        return r;
    }

    /// <summary>Stops the event threads (not those of <see cref="Shared"/>, which lives as long as the process); dispose the sockets it serves first.</summary>
    public void Dispose()
    {
        if (SharedRuntime.IsValueCreated && this == SharedRuntime.Value) return;
        foreach (var r in _reactors) r.Dispose();
    }
}
