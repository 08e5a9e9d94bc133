using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Vhost.Fuzz;

/// <summary>
/// The library's log lines, for replaying one input (`Vhost.Fuzz -v TARGET FILE` prints them to stderr, so one
/// can see what the input made the back-end refuse); silent while fuzzing, where they would only cost time.
/// </summary>
internal static class Log
{
    public static ILogger Logger { get; set; } = NullLogger.Instance;

    public sealed class Stderr : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Console.Error.WriteLine($"{logLevel}: {formatter(state, exception)}");
    }
}
