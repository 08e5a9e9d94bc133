using System.Buffers.Binary;
using System.Diagnostics;
using System.IO.Compression;
using System.Net.Sockets;

namespace Vhost.Packaging.Tests;

/// <summary>What a user gets from the packages: the ids, the tool, and a library that builds and serves from them.</summary>
[Collection(PackagesCollection.Name)]
public sealed class PackageTests(Packages packages)
{
    [Fact]
    public void TheSolutionPacksFivePackagesEachWithReadmeLicenseAndDocs()
    {
        var ids = Directory.GetFiles(packages.Feed, "*.nupkg").Select(f => Path.GetFileName(f)).Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(["Vhost.0.1.0.nupkg", "Vhost.Blk.0.1.0.nupkg", "Vhost.Cli.0.1.0.nupkg", "Vhost.Crypto.0.1.0.nupkg", "Vhost.Net.0.1.0.nupkg"], ids);
        foreach (var id in new[] { "Vhost", "Vhost.Net", "Vhost.Blk", "Vhost.Crypto" })
        {
            using var zip = ZipFile.OpenRead(Path.Combine(packages.Feed, $"{id}.{Packages.Version}.nupkg"));
            var entries = zip.Entries.Select(e => e.FullName).ToHashSet();
            Assert.Contains("README.md", entries);
            Assert.Contains("LICENSE", entries);
            Assert.Contains($"lib/net10.0/{id}.xml", entries);
        }
    }

    [Fact]
    public void TheToolInstallsFromTheLocalFolderAndPrintsItsVersion()
    {
        var toolPath = Path.Combine(packages.Root, "tools");
        var install = packages.Run("dotnet", ["tool", "install", "--tool-path", toolPath, "--configfile", packages.ConfigFile,
            "Vhost.Cli", "--version", Packages.Version], packages.Root);
        Assert.True(install.ExitCode == 0, $"dotnet tool install failed:\n{install.Output}");
        var version = packages.Run(Path.Combine(toolPath, "vhost"), ["--version"], packages.Root);
        Assert.Equal(0, version.ExitCode);
        Assert.StartsWith(Packages.Version + "+", version.Output.Trim(), StringComparison.Ordinal);
    }

    private const string ConsoleProject = """
        <Project Sdk="Microsoft.NET.Sdk">
          <PropertyGroup>
            <OutputType>Exe</OutputType>
            <TargetFramework>net10.0</TargetFramework>
            <Nullable>enable</Nullable>
            <ImplicitUsings>enable</ImplicitUsings>
            <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
          </PropertyGroup>
          <ItemGroup>
            <PackageReference Include="Vhost.Blk" Version="0.1.0" />
          </ItemGroup>
        </Project>
        """;

    private const string ConsoleProgram = """
        using Vhost.Blk;
        using Vhost.Transport;

        using var disk = new MemoryDisk(16L << 20);
        using var blk = new VirtioBlk(disk);
        using var socket = new VhostUserSocket(blk.CreateSocketOptions(args[0]));
        socket.Start();
        Console.WriteLine($"listening {args[0]}");
        Console.In.ReadToEnd();
        """;

    [Fact]
    public async Task AConsoleAppBuiltAgainstThePackagesServesABlkDisk()
    {
        var app = Directory.CreateDirectory(Path.Combine(packages.Root, "app")).FullName;
        File.WriteAllText(Path.Combine(app, "app.csproj"), ConsoleProject);
        File.WriteAllText(Path.Combine(app, "Program.cs"), ConsoleProgram);
        var restore = packages.Run("dotnet", ["restore", "--configfile", packages.ConfigFile], app);
        Assert.True(restore.ExitCode == 0, $"restore failed:\n{restore.Output}");
        // the package, not a project: the assembly comes from the temporary package folder
        Assert.True(File.Exists(Path.Combine(packages.PackagesFolder, "vhost.blk", Packages.Version, "lib", "net10.0", "Vhost.Blk.dll")));
        var build = packages.Run("dotnet", ["build", "--no-restore", "-c", "Release", "-o", Path.Combine(app, "out")], app);
        Assert.True(build.ExitCode == 0, $"build failed:\n{build.Output}");

        var sock = Path.Combine(app, "blk.sock");
        var psi = new ProcessStartInfo("dotnet", [Path.Combine(app, "out", "app.dll"), sock])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var p = Process.Start(psi)!;
        var listening = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var output = new System.Text.StringBuilder();
        p.OutputDataReceived += (_, e) =>
        {
            if (e.Data == null) return;
            lock (output) output.AppendLine(e.Data);
            if (e.Data.StartsWith("listening", StringComparison.Ordinal)) listening.TrySetResult();
        };
        p.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (output) output.AppendLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        try
        {
            var exited = p.WaitForExitAsync();
            var first = await Task.WhenAny(listening.Task, exited, Task.Delay(TimeSpan.FromSeconds(60)));
            Assert.True(first == listening.Task, $"the app did not come up:\n{output}");

            // VHOST_USER_GET_FEATURES: the reply must offer VIRTIO_F_VERSION_1 and VIRTIO_BLK_F_FLUSH
            using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            s.Connect(new UnixDomainSocketEndPoint(sock));
            var request = new byte[12];
            BinaryPrimitives.WriteUInt32LittleEndian(request, 1);
            BinaryPrimitives.WriteUInt32LittleEndian(request.AsSpan(4), 1);
            s.Send(request);
            var reply = new byte[20];
            for (int got = 0; got < reply.Length;)
            {
                int n = s.Receive(reply.AsSpan(got));
                Assert.True(n > 0, "the back-end closed the connection instead of replying");
                got += n;
            }
            Assert.Equal(1u, BinaryPrimitives.ReadUInt32LittleEndian(reply));
            Assert.Equal(8u, BinaryPrimitives.ReadUInt32LittleEndian(reply.AsSpan(8)));
            ulong features = BinaryPrimitives.ReadUInt64LittleEndian(reply.AsSpan(12));
            Assert.True((features & (1UL << 32)) != 0, $"features 0x{features:x} without VERSION_1");
            Assert.True((features & (1UL << 9)) != 0, $"features 0x{features:x} without BLK_F_FLUSH");
        }
        finally
        {
            p.StandardInput.Close();
            if (!p.WaitForExit(TimeSpan.FromSeconds(30))) p.Kill(entireProcessTree: true);
        }
    }
}
