using Vhost.Interop.Tests.Peers;
using Xunit.Abstractions;

namespace Vhost.Interop.Tests;

/// <summary>
/// The `vhost net` tool against DPDK testpmd's virtio-user and a QEMU guest: every combination of ring format,
/// mergeable buffers, in-order, 1 or 2 queue pairs and 64 or 1518-byte frames, in both directions (about five
/// seconds each), plus 9000-byte frames across chained buffers.
/// </summary>
[Collection(PeersCollection.Name)]
public sealed class NetInteropTests(ITestOutputHelper output)
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(60);

    public static TheoryData<bool, bool, bool, int, int> Matrix()
    {
        var d = new TheoryData<bool, bool, bool, int, int>();
        foreach (bool packed in new[] { false, true })
            foreach (bool mrg in new[] { false, true })
                foreach (bool inOrder in new[] { false, true })
                    foreach (int queues in new[] { 1, 2 })
                        foreach (int size in new[] { 64, 1518 })
                            d.Add(packed, mrg, inOrder, queues, size);
        return d;
    }

    [Theory]
    [MemberData(nameof(Matrix))]
    public void EnqueueToTestpmdCountsAgree(bool packed, bool mrg, bool inOrder, int queues, int size)
    {
        // an exact count: the generator stops after N frames but stays connected, so testpmd drains every ring.
        // It sends on a queue only once testpmd has kicked it: testpmd's virtio driver discards whatever is in its
        // receive rings when it starts the port, after the device is ready here, and kicks each one after that
        // (virtio_dev_start); a fixed delay was a guess that lost a burst now and then.
        const long N = 200_000;
        using var dir = new PeerTempDir("net");
        var sock = dir.File("vh.sock");
        using var tool = VhostTool.StartNet(dir, "txonly", [sock], "--txpkts", $"{size}", "--queues", $"{queues}", "--count", $"{N}",
            "--start-on-kick");
        using var tp = Testpmd.StartVirtioUser(sock, dir, new TestpmdOptions
        {
            ForwardMode = "rxonly", Packed = packed, MergeableRx = mrg, InOrder = inOrder, Queues = queues, MainLcore = 1,
        });
        try
        {
            tool.WaitReady();
            Assert.NotNull(tp.WaitForStats(s => s.RxPackets >= N, T));
            Thread.Sleep(1500); // one more stats period: anything beyond N would show
            tp.Stop();
            tool.Interrupt(TimeSpan.FromSeconds(20));
            var sent = tool.Totals()[0].Tx;
            Assert.True(tp.Final.TryGetValue(0, out var got), tp.Tail());
            output.WriteLine($"vhost sent {sent}, testpmd received {got.RxPackets}");
            Assert.Equal(N, sent);
            Assert.Equal(N, got.RxPackets);
        }
        catch
        {
            output.WriteLine(tool.Tail(40));
            output.WriteLine(tp.Tail(40));
            throw;
        }
    }

    [Theory]
    [MemberData(nameof(Matrix))]
    public void DequeueFromTestpmdSeesWhatItSent(bool packed, bool mrg, bool inOrder, int queues, int size) =>
        Dequeue(packed, mrg, inOrder, queues, size);

    /// <summary>Every received frame's lines flushed after the copy (the tuner's "on", forced): counts still agree.</summary>
    [Theory]
    [InlineData(false, 64)]
    [InlineData(true, 64)]
    [InlineData(true, 1518)]
    public void DequeueWithLineEvictionAlwaysSeesWhatItSent(bool packed, int size) =>
        Dequeue(packed, true, true, 1, size, "--line-eviction", "Always");

    /// <summary>The tool woken by testpmd's kicks instead of polling: counts still agree.</summary>
    [Theory]
    [InlineData(false, 1)]
    [InlineData(true, 2)]
    public void DequeueEventDrivenSeesWhatItSent(bool packed, int queues) =>
        Dequeue(packed, true, true, queues, 64, "--event-driven");

    private void Dequeue(bool packed, bool mrg, bool inOrder, int queues, int size, params string[] toolArgs)
    {
        using var dir = new PeerTempDir("net");
        var sock = dir.File("vh.sock");
        using var tool = VhostTool.StartNet(dir, "rxonly", [sock], ["--queues", $"{queues}", .. toolArgs]);
        using var tp = Testpmd.StartVirtioUser(sock, dir, new TestpmdOptions
        {
            ForwardMode = "txonly", Packed = packed, MergeableRx = mrg, InOrder = inOrder, Queues = queues, TxPackets = size, MainLcore = 1,
        });
        try
        {
            tool.WaitReady();
            Assert.NotNull(tp.WaitForStats(s => s.TxPackets > 10_000, T));
            tp.Stop();
            Thread.Sleep(1500);
            tool.Interrupt(TimeSpan.FromSeconds(20));
            var got = tool.Totals()[0].Rx;
            Assert.True(tp.Final.TryGetValue(0, out var sent), tp.Tail());
            output.WriteLine($"testpmd sent {sent.TxPackets}, vhost received {got}");
            // testpmd counts a frame once it is in the ring; a burst still there when it quits is never read
            Assert.InRange(got, sent.TxPackets - 4096, sent.TxPackets);
        }
        catch
        {
            output.WriteLine(tool.Tail(40));
            output.WriteLine(tp.Tail(40));
            throw;
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void JumboFramesCrossChainedBuffersBothWays(bool packed)
    {
        using var dir = new PeerTempDir("net");
        var jumbo = new[] { "--enable-scatter", "--max-pkt-len=9018" };
        // host to guest: 9000-byte frames spread over 2 KiB guest buffers (mergeable); an exact count, as above
        const long N = 20_000;
        var sock = dir.File("in.sock");
        using (var tool = VhostTool.StartNet(dir, "txonly", [sock], "--txpkts", "9000", "--count", $"{N}", "--start-on-kick"))
        using (var tp = Testpmd.StartVirtioUser(sock, dir, new TestpmdOptions { ForwardMode = "rxonly", Packed = packed, MainLcore = 1, ExtraArgs = jumbo }))
        {
            tool.WaitReady();
            Assert.NotNull(tp.WaitForStats(s => s.RxPackets >= N, T));
            Thread.Sleep(1500);
            tp.Stop();
            tool.Interrupt(TimeSpan.FromSeconds(20));
            long sent = tool.Totals()[0].Tx;
            Assert.True(tp.Final.TryGetValue(0, out var got), tp.Tail());
            output.WriteLine($"9000 B in: vhost sent {sent}, testpmd received {got.RxPackets}");
            Assert.Equal(N, sent);
            Assert.Equal(N, got.RxPackets);
        }
        // guest to host: testpmd sends each frame as five chained mbufs (2000+2000+2000+2000+1000)
        var sock2 = dir.File("out.sock");
        using (var tool = VhostTool.StartNet(dir, "rxonly", [sock2]))
        using (var tp = Testpmd.StartVirtioUser(sock2, dir, new TestpmdOptions
        {
            ForwardMode = "txonly", Packed = packed, MainLcore = 1,
            ExtraArgs = [.. jumbo, "--txpkts=2000,2000,2000,2000,1000", "--tx-offloads=0x8000"],
        }))
        {
            tool.WaitReady();
            Assert.NotNull(tp.WaitForStats(s => s.TxPackets > 1000, T));
            tp.Stop();
            Thread.Sleep(1500);
            tool.Interrupt(TimeSpan.FromSeconds(20));
            long got = tool.Totals()[0].Rx;
            Assert.True(tp.Final.TryGetValue(0, out var sent), tp.Tail());
            output.WriteLine($"9000 B out: testpmd sent {sent.TxPackets}, vhost received {got}");
            Assert.InRange(got, sent.TxPackets - 4096, sent.TxPackets);
            Assert.Contains("size_1519_max_packets", tool.Output);
        }
    }

    [Fact]
    public void SwitchForwardsBetweenTwoTestpmds()
    {
        using var dir = new PeerTempDir("net");
        var a = dir.File("a.sock");
        var b = dir.File("b.sock");
        using var tool = VhostTool.StartNet(dir, "switch", [a, b]);
        using var tx = Testpmd.StartVirtioUser(a, dir, new TestpmdOptions { ForwardMode = "txonly", MainLcore = 1 });
        using var rx = Testpmd.StartVirtioUser(b, dir, new TestpmdOptions { ForwardMode = "rxonly", MainLcore = 0 });
        try
        {
            tool.WaitReady(2);
            // testpmd txonly sends to a fixed unicast MAC nobody owns: the switch floods it to the other port
            Assert.NotNull(rx.WaitForStats(s => s.RxPackets > 1000, T));
        }
        catch
        {
            output.WriteLine(tool.Tail(40));
            output.WriteLine(tx.Tail(20));
            output.WriteLine(rx.Tail(20));
            throw;
        }
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public async Task GuestPingsTheResponder(bool packed, bool eventDriven)
    {
        using var dir = new PeerTempDir("net");
        var sock = dir.File("vh.sock");
        // event-driven: Linux's driver kicks only when the device asks (event index), so a lost re-arm shows as lost pings
        using var tool = VhostTool.StartNet(dir, "responder", [sock], eventDriven ? ["--event-driven"] : []);
        var args = QemuGuest.NetDeviceArgs(sock).ToArray();
        if (packed) args[^1] += ",packed=on";
        var result = await QemuGuest.RunAsync(SharedHarness.Script("guest-tests/net-ping.sh"), args, dir, TimeSpan.FromSeconds(240));
        output.WriteLine(result.ToString());
        output.WriteLine(tool.Tail(20));
        Assert.Equal(0, result.ExitCode);
        Assert.Contains("20 packets received", result.Console);
    }

    /// <summary>
    /// A q35 guest behind an emulated Intel IOMMU in strict mode (every buffer mapped just before it is posted and
    /// unmapped after use): ring and buffer addresses are IOVAs, every first touch of a buffer misses, and each
    /// ping must still be answered.
    /// </summary>
    [Theory]
    [InlineData(false, false)]
    [InlineData(true, true)]
    public async Task AGuestBehindAVIommuInStrictModePingsTheResponder(bool packed, bool eventDriven)
    {
        using var dir = new PeerTempDir("iommu");
        var sock = dir.File("vh.sock");
        using var tool = VhostTool.StartNet(dir, "responder", [sock], eventDriven ? ["--iommu", "--event-driven"] : ["--iommu"]);
        string[] args =
        [
            .. QemuGuest.ViommuMachineArgs,
            "-chardev", $"socket,id=c1,path={sock}", "-netdev", "vhost-user,id=n0,chardev=c1",
            "-device", "virtio-net-pci,netdev=n0,romfile=,vectors=0,mac=52:54:00:12:34:56,bus=rp0,iommu_platform=on,ats=on" + (packed ? ",packed=on" : ""),
        ];
        var result = await QemuGuest.RunAsync(SharedHarness.Script("guest-tests/net-ping.sh"), args, dir, TimeSpan.FromSeconds(300),
            QemuGuest.ViommuStrictAppend);
        output.WriteLine(result.ToString());
        Assert.Equal(0, tool.Interrupt(TimeSpan.FromSeconds(20)));
        output.WriteLine(tool.Tail(20));
        Assert.Equal(0, result.ExitCode);
        // net-ping.sh's status is its pipeline's last command: the count is what says every ping was answered
        Assert.Contains("20 packets received", result.Console, StringComparison.Ordinal);
        var features = System.Text.RegularExpressions.Regex.Match(tool.Output, @"ready \(features 0x([0-9a-f]+)\)");
        Assert.True(features.Success, tool.Tail(5));
        // VIRTIO_F_ACCESS_PLATFORM negotiated: the addresses were IOVAs
        Assert.NotEqual(0UL, ulong.Parse(features.Groups[1].Value, System.Globalization.NumberStyles.HexNumber) & (1UL << 33));
        var rx = IotlbCounters(tool.Output, 0);
        Assert.True(rx["iotlb_misses"] > 0 && rx["iotlb_hits"] > 0, tool.Tail(5));
        Assert.True(rx["iotlb_updates"] > 0 && rx["iotlb_invalidations"] > 0, tool.Tail(5));
    }

    /// <summary>The IOTLB figures of one queue from the tool's JSON exit lines.</summary>
    private static Dictionary<string, long> IotlbCounters(string toolOutput, int queue)
    {
        var line = toolOutput.Split('\n').Last(l => l.Contains($"\"queue\":{queue},", StringComparison.Ordinal));
        using var doc = System.Text.Json.JsonDocument.Parse(line);
        var d = new Dictionary<string, long> { ["iotlb_hits"] = 0, ["iotlb_misses"] = 0, ["iotlb_updates"] = 0, ["iotlb_invalidations"] = 0 };
        foreach (var p in doc.RootElement.EnumerateObject())
            if (p.Name.StartsWith("iotlb_", StringComparison.Ordinal)) d[p.Name] = p.Value.GetInt64();
        return d;
    }
}
