using Vhost.Interop.Tests.Peers;
using Xunit.Abstractions;

namespace Vhost.Interop.Tests;

/// <summary>
/// The `vhost net` tool against DPDK testpmd's virtio-user and a QEMU guest. The matrix covers each axis once
/// (ring format, mergeable buffers, in-order, queue pairs, direction, frame size) rather than the full cross
/// product, to keep the suite inside CI's time.
/// </summary>
[Collection(PeersCollection.Name)]
public sealed class NetInteropTests(ITestOutputHelper output)
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(60);

    [Theory]
    [InlineData(false, true, true, 1, 64)]
    [InlineData(true, false, false, 1, 1518)]
    [InlineData(false, false, true, 2, 1518)]
    [InlineData(true, true, true, 2, 64)]
    public void EnqueueToTestpmdCountsAgree(bool packed, bool mrg, bool inOrder, int queues, int size)
    {
        using var dir = new PeerTempDir("net");
        var sock = dir.File("vh.sock");
        using var tool = VhostTool.StartNet(dir, "txonly", [sock], "--txpkts", $"{size}", "--queues", $"{queues}");
        using var tp = Testpmd.StartVirtioUser(sock, dir, new TestpmdOptions
        {
            ForwardMode = "rxonly", Packed = packed, MergeableRx = mrg, InOrder = inOrder, Queues = queues, MainLcore = 1,
        });
        try
        {
            tool.WaitReady();
            Assert.NotNull(tp.WaitForStats(s => s.RxPackets > 10_000, T));
            // stop the sender first: everything it counted is in the ring, and testpmd drains it before it stops
            tool.Interrupt(TimeSpan.FromSeconds(20));
            Thread.Sleep(1000);
            tp.Stop();
            var sent = tool.Totals()[0].Tx;
            Assert.True(tp.Final.TryGetValue(0, out var got), tp.Tail());
            output.WriteLine($"vhost sent {sent}, testpmd received {got.RxPackets}");
            Assert.True(sent > 10_000);
            Assert.Equal(sent, got.RxPackets);
        }
        catch
        {
            output.WriteLine(tool.Tail(40));
            output.WriteLine(tp.Tail(40));
            throw;
        }
    }

    [Theory]
    [InlineData(false, true, 1, 64)]
    [InlineData(true, false, 2, 1518)]
    public void DequeueFromTestpmdSeesWhatItSent(bool packed, bool inOrder, int queues, int size)
    {
        using var dir = new PeerTempDir("net");
        var sock = dir.File("vh.sock");
        using var tool = VhostTool.StartNet(dir, "rxonly", [sock], "--queues", $"{queues}");
        using var tp = Testpmd.StartVirtioUser(sock, dir, new TestpmdOptions
        {
            ForwardMode = "txonly", Packed = packed, InOrder = inOrder, Queues = queues, TxPackets = size, MainLcore = 1,
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
    [InlineData(false)]
    [InlineData(true)]
    public async Task GuestPingsTheResponder(bool packed)
    {
        using var dir = new PeerTempDir("net");
        var sock = dir.File("vh.sock");
        using var tool = VhostTool.StartNet(dir, "responder", [sock]);
        var args = QemuGuest.NetDeviceArgs(sock).ToArray();
        if (packed) args[^1] += ",packed=on";
        var result = await QemuGuest.RunAsync(SharedHarness.Script("guest-tests/net-ping.sh"), args, dir, TimeSpan.FromSeconds(240));
        output.WriteLine(result.ToString());
        output.WriteLine(tool.Tail(20));
        Assert.Equal(0, result.ExitCode);
        Assert.Contains("20 packets received", result.Console);
    }
}
