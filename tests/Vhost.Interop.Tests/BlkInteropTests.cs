using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Vhost.Interop.Tests.Peers;
using Xunit.Abstractions;

namespace Vhost.Interop.Tests;

/// <summary>
/// The `vhost blk` tool (a separate process, as users run it) under a QEMU guest running the shared
/// harness's integrity test: RAM disk, two queues on two vCPUs, a file image checked on the host, a
/// read-only disk, the back-end killed and restarted under a writing guest, and qemu-storage-daemon
/// running the same guest test as a cross-check.
/// </summary>
[Collection(PeersCollection.Name)]
public sealed partial class BlkInteropTests(ITestOutputHelper output)
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(150);

    private static string Integrity => SharedHarness.Script("guest-tests/blk-integrity.sh");

    private static string[] Device(string sock, int queues = 1, bool reconnect = false, int smp = 1, bool packed = false) =>
    [
        "-chardev", $"socket,id=c0,path={sock}{(reconnect ? ",reconnect=1" : "")}",
        "-device", $"vhost-user-blk-pci,chardev=c0,num-queues={queues}{(packed ? ",packed=on" : "")}",
        // guest-run.sh says -smp 1; a later -smp wins
        .. (smp > 1 ? new[] { "-smp", $"{smp}" } : []),
    ];

    private GuestResult Check(GuestResult r, string what)
    {
        output.WriteLine($"{what}: guest {r.ExitCode} in {r.Elapsed.TotalSeconds:F1} s");
        Assert.True(r.ExitCode == 0, $"{what}: {r}");
        return r;
    }

    [Fact]
    public async Task MemoryDiskKeepsTheGuestsData()
    {
        using var dir = new PeerTempDir("blk");
        var sock = dir.File("b.sock");
        using var tool = VhostTool.StartBlk(dir, sock, "--size", "64M");
        var r = Check(await QemuGuest.RunAsync(Integrity, Device(sock), dir, T), "memory disk");
        Assert.Contains("sectors=131072 lbs=512", r.Console, StringComparison.Ordinal);
        Assert.Equal(0, tool.Interrupt(TimeSpan.FromSeconds(20)));
        Assert.Contains("totals over", tool.Output, StringComparison.Ordinal);
        Assert.Matches(@"\d+ writes 8388608 bytes", tool.Output);
    }

    [Fact]
    public async Task LinuxReadsTheConfigAndUsesGetIdFlushAndDiscard()
    {
        using var dir = new PeerTempDir("blk");
        var sock = dir.File("b.sock");
        using var tool = VhostTool.StartBlk(dir, sock, "--size", "32M");
        var r = Check(await QemuGuest.RunAsync(SharedHarness.LocalGuestScript("blk-features.sh"), Device(sock), dir, T), "features");
        foreach (var line in new[] { "max_segments=126", "discard_max=2147483648", "write_zeroes_max=2147483648", "cache=write back",
                     "serial=vhost-mem", "fsync-ok", "discard-ok nonzero-after=0" })
            Assert.Contains(line, r.Console, StringComparison.Ordinal);
        Assert.Equal(0, tool.Interrupt(TimeSpan.FromSeconds(20)));
        Assert.Matches(@"[1-9]\d* flushes, [1-9]\d* discards, \d+ write-zeroes, [1-9]\d* get-id\), 0 I/O errors, 0 refused, 0 unsupported", tool.Output);
    }

    [Fact]
    public async Task TwoQueuesOnTwoVcpus()
    {
        using var dir = new PeerTempDir("blk");
        var sock = dir.File("b.sock");
        using var tool = VhostTool.StartBlk(dir, sock, "--size", "64M", "--queues", "2");
        var r = Check(await QemuGuest.RunAsync(Integrity, Device(sock, queues: 2, smp: 2), dir, T), "2 queues, -smp 2");
        Assert.Contains("queues=2", r.Console, StringComparison.Ordinal);
        Assert.Contains("2 queue(s)", tool.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task FileImageHoldsWhatTheGuestWrote()
    {
        using var dir = new PeerTempDir("blk");
        var sock = dir.File("b.sock");
        var image = dir.File("disk.img");
        GuestResult r;
        using (var tool = VhostTool.StartBlk(dir, sock, "--image", image, "--size", "64M"))
        {
            r = Check(await QemuGuest.RunAsync(Integrity, Device(sock), dir, T), "file image");
            Assert.Equal(0, tool.Interrupt(TimeSpan.FromSeconds(20)));
        }
        Assert.Equal(64L << 20, new FileInfo(image).Length);
        Assert.Equal(Sha1OfPrefix(image, 8 << 20), WrittenSha1(r.Console));
    }

    /// <summary>
    /// A q35 guest behind an emulated Intel IOMMU (strict: each request's pages mapped just before it is posted and
    /// unmapped when it completes): every request misses, waits for its updates, and what the guest wrote is on
    /// the host's image.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AGuestBehindAVIommuInStrictModeWritesAndReadsBack(bool packed)
    {
        using var dir = new PeerTempDir("blk-iommu");
        var sock = dir.File("b.sock");
        var image = dir.File("disk.img");
        GuestResult r;
        string totals;
        using (var tool = VhostTool.StartBlk(dir, sock, "--image", image, "--size", "64M", "--iommu"))
        {
            string[] args =
            [
                .. QemuGuest.ViommuMachineArgs,
                "-chardev", $"socket,id=c0,path={sock}",
                "-device", "vhost-user-blk-pci,chardev=c0,bus=rp0,iommu_platform=on,ats=on" + (packed ? ",packed=on" : ""),
            ];
            r = Check(await QemuGuest.RunAsync(Integrity, args, dir, T, QemuGuest.ViommuStrictAppend), "vIOMMU strict");
            Assert.Equal(0, tool.Interrupt(TimeSpan.FromSeconds(20)));
            totals = tool.Output;
        }
        Assert.Equal(Sha1OfPrefix(image, 8 << 20), WrittenSha1(r.Console));
        var m = Regex.Match(totals, @"iotlb: (\d+) hits, (\d+) misses, (\d+) updates, (\d+) invalidations");
        Assert.True(m.Success, totals);
        for (int g = 1; g <= 4; g++) Assert.True(long.Parse(m.Groups[g].Value, CultureInfo.InvariantCulture) > 0, m.Value);
    }

    [Fact]
    public async Task ClientModeConnectsToQemusSocket()
    {
        using var dir = new PeerTempDir("blk");
        var sock = dir.File("b.sock");
        // the tool retries until QEMU (server=on, waiting for its back-end) has made the socket
        using var tool = new ClientTool(dir, sock);
        var r = Check(await QemuGuest.RunAsync(Integrity, ["-chardev", $"socket,id=c0,path={sock},server=on", "-device", "vhost-user-blk-pci,chardev=c0"], dir, T),
            "client mode");
        Assert.Contains("written=", r.Console, StringComparison.Ordinal);
        Assert.Contains("(client)", tool.Tool.Output, StringComparison.Ordinal);
    }

    private sealed class ClientTool(PeerTempDir dir, string sock) : IDisposable
    {
        public VhostTool Tool { get; } = VhostTool.StartBlkClient(dir, sock, "--size", "32M");

        public void Dispose() => Tool.Dispose();
    }

    [Fact]
    public async Task ReadOnlyDiskRefusesWrites()
    {
        using var dir = new PeerTempDir("blk");
        var sock = dir.File("b.sock");
        using var tool = VhostTool.StartBlk(dir, sock, "--size", "16M", "--readonly");
        var r = Check(await QemuGuest.RunAsync(SharedHarness.LocalGuestScript("blk-readonly.sh"), Device(sock), dir, T), "read-only");
        Assert.Contains("ro=1", r.Console, StringComparison.Ordinal);
        Assert.Contains("write-failed", r.Console, StringComparison.Ordinal);
        Assert.Contains("read-ok", r.Console, StringComparison.Ordinal);
    }

    /// <summary>
    /// The guest writes and verifies two passes of 8 MiB while the back-end (on a slow disk, so requests
    /// are in flight) is killed with SIGKILL and started again on the same image; QEMU reconnects, the new
    /// back-end resubmits what the old one had popped, and every pass reads back what it wrote.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task BackEndKilledAndRestartedLosesNothing(bool packed)
    {
        using var dir = new PeerTempDir("blk");
        var sock = dir.File("b.sock");
        var image = dir.File("disk.img");
        string[] slow = ["--image", image, "--size", "64M", "--latency-ms", "400", "--io-threads", "4"];
        var first = VhostTool.StartBlk(dir, sock, slow);
        using var guest = QemuGuest.Start(SharedHarness.LocalGuestScript("blk-write-loop.sh"), Device(sock, reconnect: true, packed: packed), dir, T);
        VhostTool? second = null;
        try
        {
            // kill while the tool reports requests on its I/O threads
            var end = DateTime.UtcNow + TimeSpan.FromSeconds(90);
            while (!InFlightRegex().IsMatch(first.Output))
            {
                Assert.True(DateTime.UtcNow < end && !first.HasExited, $"the first back-end never had requests in flight:\n{first.Tail()}");
                await Task.Delay(20);
            }
            var killedAt = Stopwatch.StartNew();
            first.Kill();
            await first.Exited.WaitAsync(TimeSpan.FromSeconds(10));
            second = VhostTool.StartBlk(dir, sock, slow);
            var r = Check(await guest.Completion.WaitAsync(T), "kill and restart");
            output.WriteLine($"restarted {killedAt.Elapsed.TotalSeconds:F1} s before the guest finished");
            Assert.Contains("pass=2", r.Console, StringComparison.Ordinal);
            var features = Regex.Match(r.Console, "features=([01]{64})").Groups[1].Value;
            Assert.True(features.Length == 64 && features[34] == (packed ? '1' : '0'), $"ring format not as asked: features={features}");
            Assert.Equal(0, second.Interrupt(TimeSpan.FromSeconds(20)));
            var resubmitted = Regex.Match(second.Output, @"(\d+) request\(s\) were in flight");
            output.WriteLine(resubmitted.Success ? $"resubmitted after restart: {resubmitted.Groups[1].Value}" : "nothing was in flight at the kill");
            // what the front-end told the new back-end about the ring, and what the area said
            foreach (var line in second.Output.Split('\n').Where(l => l.Contains("in-flight area", StringComparison.Ordinal)))
                output.WriteLine($"second back-end: {line.Trim()}");
            Assert.Equal(Sha1OfPrefix(image, 8 << 20), Regex.Match(r.Console, "final=([0-9a-f]{40})").Groups[1].Value);
        }
        finally
        {
            first.Dispose();
            second?.Dispose();
        }
    }

    /// <summary>The same guest test against qemu-storage-daemon and against us, on file images, timed.</summary>
    [Fact]
    public async Task SameGuestTestAgainstQemuStorageDaemon()
    {
        using var dir = new PeerTempDir("blk");
        var qsdImage = QemuStorageDaemon.CreateImage(dir, 64L << 20, "qsd.img");
        var qsdSock = dir.File("qsd.sock");
        GuestResult qsd;
        using (var d = QemuStorageDaemon.Start(qsdImage, qsdSock, dir, queues: 1))
            qsd = Check(await QemuGuest.RunAsync(Integrity, Device(qsdSock), dir, T), "qemu-storage-daemon");
        Assert.Equal(Sha1OfPrefix(qsdImage, 8 << 20), WrittenSha1(qsd.Console));

        var ourImage = dir.File("ours.img");
        var ourSock = dir.File("ours.sock");
        GuestResult ours;
        using (var tool = VhostTool.StartBlk(dir, ourSock, "--image", ourImage, "--size", "64M"))
        {
            ours = Check(await QemuGuest.RunAsync(Integrity, Device(ourSock), dir, T), "vhost blk");
            tool.Interrupt(TimeSpan.FromSeconds(20));
        }
        Assert.Equal(Sha1OfPrefix(ourImage, 8 << 20), WrittenSha1(ours.Console));
        output.WriteLine($"wall time of the guest run: qemu-storage-daemon {qsd.Elapsed.TotalSeconds:F1} s, vhost blk {ours.Elapsed.TotalSeconds:F1} s");
    }

    private static string WrittenSha1(string console) =>
        WrittenRegex().Match(console) is { Success: true } m ? m.Groups[1].Value : throw new InvalidDataException($"no written= line:\n{console}");

    private static string Sha1OfPrefix(string path, int length)
    {
        using var f = File.OpenRead(path);
        var buf = new byte[length];
        f.ReadExactly(buf);
        return Convert.ToHexStringLower(SHA1.HashData(buf));
    }

    [GeneratedRegex(@"in flight [1-9]")]
    private static partial Regex InFlightRegex();

    [GeneratedRegex("written=([0-9a-f]{40})")]
    private static partial Regex WrittenRegex();
}
