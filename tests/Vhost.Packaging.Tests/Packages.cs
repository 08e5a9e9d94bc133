using System.Diagnostics;
using System.Reflection;
using System.Text;

namespace Vhost.Packaging.Tests;

/// <summary>
/// The solution packed once (no build: the projects were built in this configuration before the tests), into a temporary
/// folder, with a NuGet configuration of its own: our ids come only from that folder (package source mapping), anything
/// else from this machine's package cache or nuget.org, and packages are extracted into a temporary folder, so a
/// package of the same version left in the user's cache by an earlier run is never used instead.
/// </summary>
public sealed class Packages : IDisposable
{
    public const string Version = "0.1.0";

    public Packages()
    {
        Root = Directory.CreateTempSubdirectory("vhost-pack-").FullName;
        Feed = Directory.CreateDirectory(Path.Combine(Root, "feed")).FullName;
        PackagesFolder = Directory.CreateDirectory(Path.Combine(Root, "nuget-packages")).FullName;
        var repo = typeof(Packages).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "RepositoryRoot").Value!;
        var pack = Run("dotnet", ["pack", Path.Combine(repo, "Vhost.sln"), "-c", Configuration, "--no-build", "-o", Feed, "--nologo"], repo);
        Assert.True(pack.ExitCode == 0, $"dotnet pack failed:\n{pack.Output}");
        ConfigFile = Path.Combine(Root, "nuget.config");
        File.WriteAllText(ConfigFile, NuGetConfig(Feed));
    }

    public string Root { get; }

    /// <summary>The folder the .nupkg files were packed into.</summary>
    public string Feed { get; }

    public string ConfigFile { get; }

    /// <summary>NUGET_PACKAGES for every restore of these tests.</summary>
    public string PackagesFolder { get; }

#if DEBUG
    public const string Configuration = "Debug";
#else
    public const string Configuration = "Release";
#endif

    private static string NuGetConfig(string feed)
    {
        var cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p
            ? p : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var sb = new StringBuilder();
        sb.AppendLine("<configuration>");
        sb.AppendLine("  <packageSources>");
        sb.AppendLine("    <clear />");
        sb.AppendLine($"    <add key=\"local\" value=\"{feed}\" />");
        // the cache's id/version/id.version.nupkg layout is a feed too: dependencies restore without a download
        if (Directory.Exists(cache)) sb.AppendLine($"    <add key=\"cache\" value=\"{cache}\" />");
        sb.AppendLine("    <add key=\"nuget.org\" value=\"https://api.nuget.org/v3/index.json\" />");
        sb.AppendLine("  </packageSources>");
        sb.AppendLine("  <packageSourceMapping>");
        sb.AppendLine("    <packageSource key=\"local\"><package pattern=\"Vhost\" /><package pattern=\"Vhost.*\" /></packageSource>");
        if (Directory.Exists(cache)) sb.AppendLine("    <packageSource key=\"cache\"><package pattern=\"*\" /></packageSource>");
        sb.AppendLine("    <packageSource key=\"nuget.org\"><package pattern=\"*\" /></packageSource>");
        sb.AppendLine("  </packageSourceMapping>");
        sb.AppendLine("</configuration>");
        return sb.ToString();
    }

    /// <summary>Runs a command to its end with this fixture's NuGet environment; stdout and stderr together.</summary>
    public (int ExitCode, string Output) Run(string file, IEnumerable<string> args, string workingDirectory)
    {
        var psi = new ProcessStartInfo(file) { WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["NUGET_PACKAGES"] = PackagesFolder ?? "";
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        using var p = Process.Start(psi)!;
        var output = new StringBuilder();
        p.OutputDataReceived += (_, e) => { if (e.Data != null) lock (output) output.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (output) output.AppendLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        // a bound so a hung restore fails the test instead of the suite
        if (!p.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            p.Kill(entireProcessTree: true);
            return (-1, output + "\n(killed after 5 minutes)");
        }
        p.WaitForExit();
        lock (output) return (p.ExitCode, output.ToString());
    }

    public void Dispose()
    {
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

[CollectionDefinition(Name)]
public sealed class PackagesCollection : ICollectionFixture<Packages>
{
    public const string Name = "packages";
}
