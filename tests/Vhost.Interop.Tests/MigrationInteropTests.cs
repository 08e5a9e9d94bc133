using System.Text.RegularExpressions;
using Vhost.Interop.Tests.Peers;
using Xunit.Abstractions;

namespace Vhost.Interop.Tests;

/// <summary>
/// Live migrations of a QEMU guest between two QEMU processes on this host, with the shared harness's
/// guest-migrate.sh and its guest tests: blk (data the back-end wrote during the migration must reach the
/// destination: dirty logging, and no write in flight lost) and net (pings before, during and after). Both
/// ends are served by one `vhost` process: blk on two sockets sharing one image, net on one socket with two
/// connections (and guest_announce=off, so QEMU asks for the RARP).
/// </summary>
[Collection(PeersCollection.Name)]
public sealed partial class MigrationInteropTests(ITestOutputHelper output)
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(200);

    private ProcessRunner.Result Migrate(string script, string[] src, string[] dst, Dictionary<string, string>? env = null)
    {
        env ??= [];
        env["GUEST_TIMEOUT"] = "180";
        var r = ProcessRunner.Run("bash", [SharedHarness.Script("guest-migrate.sh"), SharedHarness.GuestDir(), script, .. src, "--", .. dst], T, env);
        output.WriteLine(MigrationLine().Match(r.Output).Value);
        return r;
    }

    // split only: a packed run's destination guest crashed once in four (a kernel oops on CPU 0, as TCG migrations
    // with two vCPUs do with qemu-storage-daemon too); until that is understood it stays out of the suite (docs/migration.md)
    [Theory]
    [InlineData(false)]
    public void BlkGuestMigratesWithoutLosingAByte(bool packed)
    {
        using var dir = new PeerTempDir("mig");
        string a = dir.File("a.sock"), b = dir.File("b.sock"), image = dir.File("m.img");
        using var tool = VhostTool.StartBlk(dir, a, "--socket", b, "--image", image, "--size", "64M");
        string opts = packed ? ",packed=on" : "";
        // Debian's guest kernel zeroes every page it allocates (init_on_alloc=1), which dirties the page cache with
        // the vCPU before the back-end fills it; without that only the back-end's dirty log saves those pages
        var r = Migrate(SharedHarness.Script("guest-tests/blk-migrate.sh"),
            ["-chardev", $"socket,id=c0,path={a}", "-device", $"vhost-user-blk-pci,chardev=c0{opts}"],
            ["-chardev", $"socket,id=c0,path={b}", "-device", $"vhost-user-blk-pci,chardev=c0{opts}"],
            new() { ["GUEST_APPEND"] = "init_on_alloc=0" });
        Assert.True(r.ExitCode == 0, $"exit {r.ExitCode}\n{r.Output}\n--- vhost blk\n{tool.Tail()}");
        Assert.Contains("MIGRATION: status=completed", r.Output, StringComparison.Ordinal);
        Assert.Contains("bad_reads=0", r.Output, StringComparison.Ordinal);
        Assert.Contains("dirty logging on", tool.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void NetGuestMigratesOnOneSocketAndTheRarpIsSent()
    {
        using var dir = new PeerTempDir("mig");
        string a = dir.File("n.sock");
        using var tool = VhostTool.StartNet(dir, "responder", [a], "--event-driven", "--verbose");
        string[] dev = [.. QemuGuest.NetDeviceArgs(a)[..^1], QemuGuest.NetDeviceArgs(a)[^1] + ",guest_announce=off"];
        var r = Migrate(SharedHarness.Script("guest-tests/net-migrate.sh"), dev, dev);
        Assert.True(r.ExitCode == 0, $"exit {r.ExitCode}\n{r.Output}\n--- vhost net\n{tool.Tail()}");
        Assert.Contains("MIGRATION: status=completed", r.Output, StringComparison.Ordinal);
        Assert.Contains("dirty logging on", tool.Output, StringComparison.Ordinal);
        Assert.Contains("RARP sent for the migrated guest", tool.Output, StringComparison.Ordinal);
    }

    [GeneratedRegex("MIGRATION: .*")]
    private static partial Regex MigrationLine();
}
