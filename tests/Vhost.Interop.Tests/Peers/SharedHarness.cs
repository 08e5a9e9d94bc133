using System.Diagnostics;

namespace Vhost.Interop.Tests.Peers;

/// <summary>
/// Locates the shared harness scripts (build-guest.sh, guest-run.sh, pvp-bench.sh, guest-tests/) and the
/// guest kernel + initrd they boot. The repository root is the directory holding Vhost.sln above the test
/// assembly; the harness is <c>&lt;root&gt;/../shared/harness</c> unless VHOST_SHARED_DIR says otherwise.
/// </summary>
public static class SharedHarness
{
    private static readonly Lazy<string> Root = new(FindRepoRoot);
    private static readonly Lock GuestLock = new();

    /// <summary>The directory that holds Vhost.sln.</summary>
    public static string RepoRoot => Root.Value;

    /// <summary>The harness directory (VHOST_SHARED_DIR, else &lt;root&gt;/../shared/harness).</summary>
    public static string Dir
    {
        get
        {
            var env = Environment.GetEnvironmentVariable("VHOST_SHARED_DIR");
            if (!string.IsNullOrEmpty(env))
            {
                if (!File.Exists(Path.Combine(env, "guest-run.sh")))
                    throw new InvalidOperationException($"VHOST_SHARED_DIR={env} holds no guest-run.sh");
                return env;
            }
            // <root>/../shared/harness; a git worktree one level deeper (e.g. /work/wt/NAME) finds it further up
            for (var d = Directory.GetParent(RepoRoot); d != null; d = d.Parent)
            {
                var dir = Path.Combine(d.FullName, "shared", "harness");
                if (File.Exists(Path.Combine(dir, "guest-run.sh"))) return dir;
            }
            throw new InvalidOperationException($"shared harness not found in ../shared/harness above {RepoRoot} (set VHOST_SHARED_DIR)");
        }
    }

    /// <summary>A harness script or guest test by relative path, e.g. "guest-tests/blk-integrity.sh".</summary>
    public static string Script(string relative)
    {
        var p = Path.Combine(Dir, relative);
        if (!File.Exists(p)) throw new FileNotFoundException($"harness file {p} missing", p);
        return p;
    }

    /// <summary>A guest script kept in this test project (copied next to the assembly).</summary>
    public static string LocalGuestScript(string name)
    {
        var p = Path.Combine(AppContext.BaseDirectory, "guest-scripts", name);
        if (!File.Exists(p)) p = Path.Combine(RepoRoot, "tests", "Vhost.Interop.Tests", "guest-scripts", name);
        if (!File.Exists(p)) throw new FileNotFoundException($"guest script {name} missing", p);
        return p;
    }

    /// <summary>
    /// The guest directory (vmlinuz + initrd.gz): VHOST_GUEST_DIR, else &lt;root&gt;/artifacts/guest, built
    /// with build-guest.sh when missing. A file lock keeps parallel test processes from building it twice.
    /// </summary>
    public static string GuestDir()
    {
        var env = Environment.GetEnvironmentVariable("VHOST_GUEST_DIR");
        var dir = !string.IsNullOrEmpty(env) ? env : Path.Combine(RepoRoot, "artifacts", "guest");
        lock (GuestLock)
        {
            if (GuestBuilt(dir)) return dir;
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(dir))!);
            using var lockFile = AcquireFileLock(dir + ".lock", TimeSpan.FromMinutes(5));
            if (GuestBuilt(dir)) return dir;
            var r = ProcessRunner.Run("bash", [Script("build-guest.sh"), dir], TimeSpan.FromMinutes(5));
            if (r.ExitCode != 0 || !GuestBuilt(dir))
                throw new InvalidOperationException($"build-guest.sh failed ({r.ExitCode}): {r.Output}");
            return dir;
        }
    }

    private static bool GuestBuilt(string dir) =>
        File.Exists(Path.Combine(dir, "vmlinuz")) && new FileInfo(Path.Combine(dir, "initrd.gz")) is { Exists: true, Length: > 0 };

    private static FileStream AcquireFileLock(string path, TimeSpan timeout)
    {
        var end = DateTime.UtcNow + timeout;
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.DeleteOnClose);
            }
            catch (IOException) when (DateTime.UtcNow < end)
            {
                Thread.Sleep(200);
            }
        }
    }

    private static string FindRepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Vhost.sln"))) return d.FullName;
        throw new InvalidOperationException($"no Vhost.sln above {AppContext.BaseDirectory}");
    }
}

/// <summary>Runs a short command to completion with a timeout, capturing stdout and stderr together.</summary>
public static class ProcessRunner
{
    public sealed record Result(int ExitCode, string Output);

    public static Result Run(string file, IEnumerable<string> args, TimeSpan timeout, IDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (env != null) foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {file}");
        p.StandardInput.Close();
        var sb = new System.Text.StringBuilder();
        p.OutputDataReceived += (_, e) => { if (e.Data != null) lock (sb) sb.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (sb) sb.AppendLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        if (!p.WaitForExit(timeout))
        {
            try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            p.WaitForExit(5000);
            lock (sb) return new Result(124, sb.ToString());
        }
        p.WaitForExit();
        lock (sb) return new Result(p.ExitCode, sb.ToString());
    }

    /// <summary>Sends a signal to one process id with /bin/kill (no P/Invoke outside Interop).</summary>
    public static void Signal(int pid, string signal) =>
        Run("kill", [$"-{signal}", pid.ToString(System.Globalization.CultureInfo.InvariantCulture)], TimeSpan.FromSeconds(5));
}

/// <summary>A per-test temporary directory for sockets, logs and images; short, so socket paths fit in 108 bytes.</summary>
public sealed class PeerTempDir : IDisposable
{
    public PeerTempDir(string tag = "peer")
    {
        Path = System.IO.Path.Combine("/tmp", $"vhi-{tag}-{Environment.ProcessId}-{Guid.NewGuid():N}"[..32]);
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    /// <summary>A unique name for DPDK's --file-prefix.</summary>
    public static string UniquePrefix(string tag) => $"{tag}{Environment.ProcessId}x{Guid.NewGuid():N}"[..24];

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
