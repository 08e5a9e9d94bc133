using System.Diagnostics;
using System.Text;

namespace Vhost.Interop.Tests.Peers;

/// <summary>
/// A long-running peer process: started under coreutils <c>timeout</c> (so nothing outlives a crashed test
/// host by more than its lifetime), its stdout and stderr written line by line to a log file and kept in
/// memory. Dispose always kills the process tree.
/// </summary>
public class PeerProcess : IDisposable
{
    private readonly Process _process;
    private readonly StreamWriter _log;
    private readonly StringBuilder _output = new();
    private readonly TaskCompletionSource<int> _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _openStreams = 3;
    private bool _disposed;

    protected PeerProcess(string file, IReadOnlyList<string> args, string logPath, TimeSpan lifetime,
        IDictionary<string, string>? env = null)
    {
        LogPath = logPath;
        CommandLine = file + " " + string.Join(' ', args);
        _log = new StreamWriter(logPath, append: false) { AutoFlush = true };
        _log.WriteLine($"$ {CommandLine}");
        var psi = new ProcessStartInfo("timeout")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        // timeout forwards SIGINT/SIGTERM to the command; -k makes sure it really ends
        psi.ArgumentList.Add("-k");
        psi.ArgumentList.Add("5");
        psi.ArgumentList.Add(((int)Math.Ceiling(lifetime.TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture));
        psi.ArgumentList.Add(file);
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (env != null) foreach (var (k, v) in env) psi.Environment[k] = v;
        _process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        _process.OutputDataReceived += (_, e) => OnData(e.Data);
        _process.ErrorDataReceived += (_, e) => OnData(e.Data);
        _process.Exited += (_, _) => Ended();
        if (!_process.Start()) throw new InvalidOperationException($"cannot start {file}");
        StartedAt = DateTime.UtcNow;
        // stdin at EOF: testpmd (stats-period mode) reads stdin once it was told to quit, and would block on a pipe
        _process.StandardInput.Close();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public string LogPath { get; }

    public string CommandLine { get; }

    public DateTime StartedAt { get; }

    /// <summary>The pid of the <c>timeout</c> wrapper; signals sent to it are forwarded to the peer.</summary>
    public int Pid => _process.Id;

    public bool HasExited => _exited.Task.IsCompleted;

    /// <summary>Completes with the exit code once the process ended and its output was read.</summary>
    public Task<int> Exited => _exited.Task;

    public string Output
    {
        get { lock (_output) return _output.ToString(); }
    }

    /// <summary>Called for each output line (on a reader thread).</summary>
    protected virtual void OnLine(string line) { }

    private void OnData(string? line)
    {
        if (line == null)
        {
            Ended();
            return;
        }
        lock (_output)
        {
            _output.AppendLine(line);
            try { _log.WriteLine(line); } catch (ObjectDisposedException) { }
        }
        OnLine(line);
    }

    // both output streams at EOF and the Exited event: no Process.WaitForExit() here, which would wait for
    // the very stream callback that calls it
    private void Ended()
    {
        if (Interlocked.Decrement(ref _openStreams) != 0) return;
        int code = _process.ExitCode;
        lock (_output) { try { _log.WriteLine($"[exit {code}]"); } catch (ObjectDisposedException) { } }
        _exited.TrySetResult(code);
    }

    /// <summary>Waits until the output has a line containing <paramref name="text"/>; false on timeout or exit.</summary>
    public bool WaitForOutput(string text, TimeSpan timeout)
    {
        var end = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < end)
        {
            if (Output.Contains(text, StringComparison.Ordinal)) return true;
            if (HasExited) return Output.Contains(text, StringComparison.Ordinal);
            Thread.Sleep(50);
        }
        return false;
    }

    /// <summary>Sends SIGINT and waits for the exit; kills the tree if it does not end in time.</summary>
    public int Interrupt(TimeSpan timeout)
    {
        if (!HasExited) ProcessRunner.Signal(Pid, "INT");
        if (Exited.Wait(timeout)) return Exited.Result;
        Kill();
        return Exited.Wait(TimeSpan.FromSeconds(10)) ? Exited.Result : -1;
    }

    public void Kill()
    {
        try
        {
            if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException) { }
        catch (System.ComponentModel.Win32Exception) { }
    }

    /// <summary>The last lines of output, for assertion messages.</summary>
    public string Tail(int lines = 30)
    {
        var all = Output.Split('\n');
        return string.Join('\n', all.Skip(Math.Max(0, all.Length - lines)));
    }

    public override string ToString() => $"{CommandLine} (log {LogPath})";

    protected virtual void Dispose(bool disposing)
    {
        if (_disposed) return;
        _disposed = true;
        if (!disposing) return;
        Kill();
        _exited.Task.Wait(TimeSpan.FromSeconds(10));
        lock (_output) _log.Dispose();
        _process.Dispose();
    }

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }
}
