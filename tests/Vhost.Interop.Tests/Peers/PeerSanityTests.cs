using Xunit.Abstractions;

namespace Vhost.Interop.Tests.Peers;

/// <summary>Proves the harness itself with peers talking to each other (no code of ours on the data path).</summary>
[Collection(PeersCollection.Name)]
public sealed class PeerSanityTests(ITestOutputHelper output)
{
    [Fact]
    public void TestpmdVirtioUserTxonlyReachesTestpmdVhostRxonly()
    {
        using var dir = new PeerTempDir("san");
        var sock = dir.File("vh.sock");
        var sw = System.Diagnostics.Stopwatch.StartNew();
        using var back = Testpmd.StartVhostBackEnd(sock, dir, new TestpmdOptions { ForwardMode = "rxonly", MainLcore = 0 });
        output.WriteLine($"{sw.Elapsed}: back-end socket up");
        using var front = Testpmd.StartVirtioUser(sock, dir, new TestpmdOptions { ForwardMode = "txonly", MainLcore = 1 });
        output.WriteLine($"{sw.Elapsed}: front-end forwarding");
        var sent = front.WaitForStats(s => s.TxPackets > 10000, TimeSpan.FromSeconds(30));
        var got = back.WaitForStats(s => s.RxPackets > 10000, TimeSpan.FromSeconds(30));
        output.WriteLine($"{sw.Elapsed}: counted");
        front.Stop();
        back.Stop();
        output.WriteLine($"{sw.Elapsed}: stopped");
        output.WriteLine($"front-end periodic {front.Latest.GetValueOrDefault(0)} final {front.Final.GetValueOrDefault(0)}");
        output.WriteLine($"back-end periodic {back.Latest.GetValueOrDefault(0)} final {back.Final.GetValueOrDefault(0)}");
        Assert.True(sent != null, $"front-end sent nothing:\n{front.Tail()}");
        Assert.True(got != null, $"back-end received nothing:\n{back.Tail()}");
        Assert.True(front.Final.TryGetValue(0, out var ff) && ff.TxPackets > 0, $"no final TX stats:\n{front.Tail()}");
        Assert.True(back.Final.TryGetValue(0, out var bf) && bf.RxPackets > 0, $"no final RX stats:\n{back.Tail()}");
    }

    [Fact]
    public async Task QemuGuestBlkIntegrityAgainstQemuStorageDaemon()
    {
        using var dir = new PeerTempDir("san");
        var image = QemuStorageDaemon.CreateImage(dir, 64L << 20);
        var sock = dir.File("blk.sock");
        using var qsd = QemuStorageDaemon.Start(image, sock, dir, queues: 2);
        var r = await QemuGuest.RunAsync(SharedHarness.Script("guest-tests/blk-integrity.sh"),
            QemuGuest.BlkDeviceArgs(sock, 2), dir, TimeSpan.FromSeconds(150));
        output.WriteLine(r.ToString());
        Assert.True(r.ExitCode == 0, $"guest failed: {r}\nqemu-storage-daemon:\n{qsd.Tail()}");
        Assert.Contains("sectors=131072", r.Console, StringComparison.Ordinal);
        Assert.Contains("GUEST-EXIT: 0", r.Console, StringComparison.Ordinal);
    }

    [Fact]
    public async Task QemuGuestNetReflectAgainstTestpmdVhost5tswap()
    {
        using var dir = new PeerTempDir("san");
        var sock = dir.File("vh.sock");
        using var back = Testpmd.StartVhostBackEnd(sock, dir, new TestpmdOptions { ForwardMode = "5tswap" });
        var r = await QemuGuest.RunAsync(SharedHarness.Script("guest-tests/net-reflect.sh"),
            QemuGuest.NetDeviceArgs(sock), dir, TimeSpan.FromSeconds(150));
        back.Stop();
        output.WriteLine(r.ToString());
        output.WriteLine($"testpmd final {back.Final.GetValueOrDefault(0)}");
        Assert.True(r.ExitCode == 0, $"guest failed: {r}\ntestpmd:\n{back.Tail()}");
        Assert.Matches(@"tx=\d+ rx=[1-9]\d*", r.Console);
    }
}
