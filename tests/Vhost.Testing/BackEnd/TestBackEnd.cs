using Microsoft.Extensions.Logging;
using Vhost.Device;
using Vhost.Testing.FrontEnd;
using Vhost.Transport;

namespace Vhost.Testing.BackEnd;

/// <summary>A served socket in a temp dir with recording callbacks and a log that tests can read.</summary>
internal sealed class TestBackEnd : IDisposable
{
    public TestBackEnd(int maxQueues = 2, int? required = null, ulong? extraFeatures = null, bool client = false, string? path = null,
        IDeviceConfigSpace? config = null, ulong? extraProtocolFeatures = null, int iotlbCapacity = Memory.IoTlb.DefaultCapacity, TimeSpan? iotlbMissTimeout = null)
    {
        Path = path ?? TestFrontEndListener.TempPath();
        Options = new VhostSocketOptions
        {
            Path = Path,
            Client = client,
            MaxQueues = maxQueues,
            QueuesRequiredForReady = required,
            Ops = Ops,
            ConfigSpace = config,
            LoggerFactory = LoggerFactory.Create(b => b.AddProvider(Logs).SetMinimumLevel(LogLevel.Debug)),
            ReconnectInterval = TimeSpan.FromMilliseconds(200),
            IotlbCapacity = iotlbCapacity,
            IotlbMissTimeout = iotlbMissTimeout ?? TimeSpan.FromMilliseconds(Memory.IoTlb.DefaultMissGiveUpMilliseconds),
        };
        if (extraFeatures is { } f) Options.Features |= f;
        if (extraProtocolFeatures is { } pf) Options.ProtocolFeatures |= pf;
        Socket = new VhostUserSocket(Options);
        Socket.Start();
    }

    public string Path { get; }

    public RecordingOps Ops { get; } = new();

    public CapturingLoggerProvider Logs { get; } = new();

    public VhostSocketOptions Options { get; }

    public VhostUserSocket Socket { get; }

    public TestFrontEnd Connect() => TestFrontEnd.Connect(Path, TimeSpan.FromSeconds(5));

    public void Dispose() => Socket.Dispose();
}

/// <summary>Collects log lines so a test can assert the one clear error a refusal must produce.</summary>
internal sealed class CapturingLoggerProvider : ILoggerProvider
{
    private readonly System.Collections.Concurrent.ConcurrentQueue<(LogLevel Level, string Text)> _lines = new();

    public IReadOnlyList<(LogLevel Level, string Text)> Lines => [.. _lines];

    public IEnumerable<string> Errors => _lines.Where(l => l.Level >= LogLevel.Error).Select(l => l.Text);

    public bool WaitForError(string contains, TimeSpan? timeout = null) => WaitFor(contains, LogLevel.Error, timeout);

    /// <summary>Waits for a line of at least <paramref name="level"/> containing <paramref name="contains"/>.</summary>
    public bool WaitFor(string contains, LogLevel level = LogLevel.Trace, TimeSpan? timeout = null)
    {
        var end = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(5));
        while (DateTime.UtcNow < end)
        {
            if (_lines.Any(l => l.Level >= level && l.Text.Contains(contains, StringComparison.OrdinalIgnoreCase))) return true;
            Thread.Sleep(10);
        }
        return false;
    }

    public ILogger CreateLogger(string categoryName) => new Logger(this);

    public void Dispose() { }

    private sealed class Logger(CapturingLoggerProvider owner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            owner._lines.Enqueue((logLevel, formatter(state, exception)));
    }
}
