using System.Text.RegularExpressions;
using Vhost.Interop.Tests.Peers;
using Xunit.Abstractions;

namespace Vhost.Interop.Tests;

/// <summary>
/// The `vhost crypto` tool under QEMU 7.2's cryptodev-vhost-user: the guest's virtio_crypto driver registers cbc(aes)
/// and the kernel runs its known-answer self-tests through our back-end; QEMU's own cryptodev-backend-builtin runs the
/// same guest test as the reference.
/// </summary>
[Collection(PeersCollection.Name)]
public sealed partial class CryptoInteropTests(ITestOutputHelper output)
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(150);

    private static string SelfTest => SharedHarness.LocalGuestScript("crypto-selftest.sh");

    // vectors=0: QEMU 7.2 under TCG crashes starting a vhost-user crypto device with MSI-X, as it does for net
    private static string[] VhostUserDevice(string sock) =>
    [
        "-chardev", $"socket,id=cc0,path={sock}", "-object", "cryptodev-vhost-user,id=cryptodev0,chardev=cc0",
        "-device", "virtio-crypto-pci,cryptodev=cryptodev0,vectors=0",
    ];

    private GuestResult Check(GuestResult r, string what)
    {
        output.WriteLine($"{what}: guest {r.ExitCode} in {r.Elapsed.TotalSeconds:F1} s");
        Assert.True(r.ExitCode == 0, $"{what}: {r}");
        Assert.Matches(@"driver\s+: virtio_crypto_aes_cbc", r.Console);
        Assert.Matches(@"selftest\s+: passed", r.Console);
        return r;
    }

    [Fact]
    public async Task KernelSelfTestPassesThroughOurBackEnd()
    {
        using var dir = new PeerTempDir("crypto");
        var sock = dir.File("c.sock");
        using var tool = VhostTool.StartCrypto(dir, sock);
        Check(await QemuGuest.RunAsync(SelfTest, VhostUserDevice(sock), dir, T), "vhost crypto");
        Assert.Equal(0, tool.Interrupt(TimeSpan.FromSeconds(20)));
        var totals = TotalsLine().Match(tool.Output);
        Assert.True(totals.Success, tool.Output);
        output.WriteLine(totals.Value);
        Assert.True(long.Parse(totals.Groups["requests"].Value, System.Globalization.CultureInfo.InvariantCulture) > 0, totals.Value);
        Assert.Equal("0", totals.Groups["refused"].Value);
    }

    [Fact]
    public async Task KernelSelfTestPassesWithQemusBuiltinBackEnd()
    {
        using var dir = new PeerTempDir("crypto");
        Check(await QemuGuest.RunAsync(SelfTest,
            ["-object", "cryptodev-backend-builtin,id=cryptodev0", "-device", "virtio-crypto-pci,cryptodev=cryptodev0"], dir, T), "builtin");
    }

    [Fact]
    public async Task AfAlgBuffersOf16BytesTo64KiBMatchTheSoftwareCipher()
    {
        using var dir = new PeerTempDir("crypto");
        var guest = BuildAfAlgGuest(dir);
        var sock = dir.File("c.sock");
        using var tool = VhostTool.StartCrypto(dir, sock);
        var r = await QemuGuest.RunAsync(SharedHarness.LocalGuestScript("crypto-afalg.sh"), VhostUserDevice(sock), dir, T, guestDir: guest);
        output.WriteLine($"AF_ALG: guest {r.ExitCode} in {r.Elapsed.TotalSeconds:F1} s");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("virtio_crypto_aes_cbc NIST SP 800-38A F.2.1 ok", r.Console, StringComparison.Ordinal);
        Assert.Contains("65536 bytes AES-256 ok", r.Console, StringComparison.Ordinal);
        Assert.Contains("afalg: 24 sizes ok", r.Console, StringComparison.Ordinal);
        Assert.Equal(0, tool.Interrupt(TimeSpan.FromSeconds(20)));
        Assert.Matches(TotalsLine(), tool.Output);
        Assert.Equal("0", TotalsLine().Match(tool.Output).Groups["refused"].Value);
    }

    [Fact]
    public async Task ASessionOutlivesQemuStopAndCont()
    {
        using var dir = new PeerTempDir("crypto");
        var guest = BuildAfAlgGuest(dir);
        var sock = dir.File("c.sock");
        var qmpSocket = dir.File("q.qmp");
        using var tool = VhostTool.StartCrypto(dir, sock);
        using var vm = QemuGuest.Start(SharedHarness.LocalGuestScript("crypto-pause.sh"),
            ["-qmp", $"unix:{qmpSocket},server=on,wait=off", .. VhostUserDevice(sock)], dir, T, guestDir: guest);
        // the guest has made its session and waits 8 s: pause the VM (QEMU stops the ring) and resume it
        VhostTool.WaitFor(() => Directory.GetFiles(dir.Path, "console-*.log").Any(f => File.ReadAllText(f).Contains("PAUSE-NOW", StringComparison.Ordinal)),
            T, "the guest never set its key");
        Qmp(qmpSocket, "stop");
        VhostTool.WaitFor(() => tool.Output.Contains("stopped: GET_VRING_BASE", StringComparison.Ordinal), T, $"QEMU did not stop the ring:\n{tool.Output}");
        Assert.Contains("\"paused\"", Qmp(qmpSocket, "query-status"), StringComparison.Ordinal);
        Qmp(qmpSocket, "cont");
        var r = await vm.Completion;
        output.WriteLine($"stop/cont: guest {r.ExitCode} in {r.Elapsed.TotalSeconds:F1} s");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("virtio_crypto_aes_cbc NIST SP 800-38A F.2.1 ok", r.Console, StringComparison.Ordinal);
        Assert.Equal(2, Regex.Matches(tool.Output, " ready: ").Count);
        Assert.Equal(0, tool.Interrupt(TimeSpan.FromSeconds(20)));
        Assert.Contains(" 0 invalid session", tool.Output, StringComparison.Ordinal);
    }

    private static string Qmp(string socket, string command)
    {
        var r = ProcessRunner.Run("python3", [SharedHarness.Script("qmp.py"), socket, command], TimeSpan.FromSeconds(40));
        Assert.True(r.ExitCode == 0, $"qmp {command}: {r.Output}");
        return r.Output;
    }

    /// <summary>The shared guest plus the AF_ALG test program (gcc -static), built into the test's directory.</summary>
    private static string BuildAfAlgGuest(PeerTempDir dir)
    {
        var bin = Path.Combine(dir.File("extra"), "bin");
        Directory.CreateDirectory(bin);
        var src = Path.Combine(SharedHarness.RepoRoot, "tests", "Vhost.Interop.Tests", "guest-tools", "afalg-cbc.c");
        var cc = ProcessRunner.Run("gcc", ["-static", "-O2", "-o", Path.Combine(bin, "afalg-cbc"), src], TimeSpan.FromMinutes(2));
        Assert.True(cc.ExitCode == 0, $"gcc: {cc.Output}");
        var guest = dir.File("guest");
        var b = ProcessRunner.Run("bash", [SharedHarness.Script("build-guest.sh"), guest], TimeSpan.FromMinutes(5),
            new Dictionary<string, string> { ["GUEST_EXTRA"] = dir.File("extra") });
        Assert.True(b.ExitCode == 0, $"build-guest.sh: {b.Output}");
        return guest;
    }

    [GeneratedRegex(@"totals over [\d.]+ s: (?<requests>\d+) requests, \d+ bytes, (?<sessions>\d+) sessions, (?<refused>\d+) refused")]
    private static partial Regex TotalsLine();
}
