using Vhost.Interop;

namespace Vhost.Testing.FrontEnd;

/// <summary>
/// The front-end as socket server, for back-ends in client mode (QEMU's "server" chardev option). Listen
/// before starting the back-end, then <see cref="Accept"/>. Disposing closes the socket and unlinks the path.
/// </summary>
internal sealed class TestFrontEndListener : IDisposable
{
    private readonly UnixSocket _listener;

    private TestFrontEndListener(string path, UnixSocket listener)
    {
        Path = path;
        _listener = listener;
    }

    public string Path { get; }

    /// <summary>Listens on <paramref name="path"/>, replacing a stale socket file left by an earlier run.</summary>
    public static TestFrontEndListener Listen(string path)
    {
        File.Delete(path);
        return new TestFrontEndListener(path, UnixSocket.Listen(path));
    }

    /// <summary>A fresh socket path in the temp directory (short enough for sun_path).</summary>
    public static string TempPath() =>
        System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"vfe-{Environment.ProcessId}-{Guid.NewGuid():N}"[..28] + ".sock");

    /// <summary>Accepts the next connection; throws <see cref="TimeoutException"/> if none comes in time.</summary>
    public TestFrontEnd Accept(TimeSpan timeout)
    {
        if (!_listener.WaitReadable((int)Math.Min(timeout.TotalMilliseconds, int.MaxValue)))
            throw new TimeoutException($"no back-end connected to {Path} within {timeout}");
        var s = _listener.Accept() ?? throw new ObjectDisposedException(nameof(TestFrontEndListener));
        return new TestFrontEnd(s);
    }

    public void Dispose()
    {
        _listener.Shutdown();
        _listener.Dispose();
        try
        {
            File.Delete(Path);
        }
        catch (IOException)
        {
            // A leftover socket file in /tmp is harmless.
        }
    }
}
