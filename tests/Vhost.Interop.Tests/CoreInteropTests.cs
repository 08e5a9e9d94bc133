using Vhost.Interop.Tests.Peers;
using Vhost.Protocol;
using Xunit.Abstractions;

namespace Vhost.Interop.Tests;

/// <summary>Our library's core against real front-ends: DPDK virtio-user (testpmd) and QEMU's vhost-user-net.</summary>
[Collection(PeersCollection.Name)]
public sealed class CoreInteropTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Start = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan T = TimeSpan.FromSeconds(30);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TestpmdVirtioUserTxonlyIsConsumed(bool packed)
    {
        using var dir = new PeerTempDir("core");
        var sock = dir.File("vh.sock");
        using var be = new InProcessBackEnd(sock);
        using var tp = Testpmd.StartVirtioUser(sock, dir, new TestpmdOptions { ForwardMode = "txonly", Packed = packed, MainLcore = 1 });
        try
        {
            var ev = be.Ops.WaitFor("new", Start);
            var dev = be.Ops.LastNew!;
            output.WriteLine($"{ev}: features 0x{be.Ops.FeaturesAtNew:x} (at new: {be.AtNew})");
            Assert.True(VirtioFeature.Has(be.Ops.FeaturesAtNew, VirtioFeature.Version1));
            Assert.Equal(packed, VirtioFeature.Has(dev.Features, VirtioFeature.RingPacked));
            Assert.True(be.AtNew!.MemoryRegions > 0, "no memory mapped at new_device");
            Assert.True(be.WaitChains(1001, T), $"consumer saw {be.Chains} chains\n{tp.Tail()}");
            output.WriteLine($"consumed {be.Chains} chains, {be.Bytes} bytes; testpmd {tp.Latest.GetValueOrDefault(0)}");
            tp.Stop();
            be.Ops.WaitFor($"destroy {dev.Id}", T);
            Assert.True(tp.Final.TryGetValue(0, out var f) && f.TxPackets > 1000, $"testpmd final stats: {f}\n{tp.Tail()}");
            output.WriteLine($"testpmd final {f}");
        }
        catch
        {
            output.WriteLine(be.LogText);
            output.WriteLine(tp.Tail(60));
            throw;
        }
    }

    [Fact]
    public void ClientModeReconnectsToARestartedTestpmdServer()
    {
        using var dir = new PeerTempDir("core");
        var sock = dir.File("vh.sock");
        var o = new TestpmdOptions { ForwardMode = "txonly", Server = true, MainLcore = 1 };
        var tp = Testpmd.StartVirtioUser(sock, dir, o);
        try
        {
            using var be = new InProcessBackEnd(sock, client: true);
            try
            {
                var first = be.Ops.WaitFor("new", Start);
                int id = be.Ops.LastNew!.Id;
                Assert.True(be.WaitChains(100, T), $"consumer saw {be.Chains} chains\n{tp.Tail()}");
                tp.Stop();
                tp.Dispose();
                be.Ops.WaitFor($"destroy {id}", T);
                long before = be.Chains;
                tp = Testpmd.StartVirtioUser(sock, dir, o);
                var second = be.Ops.WaitFor("new", Start);
                output.WriteLine($"{first} then {second}; features 0x{be.Ops.FeaturesAtNew:x}");
                Assert.True(be.WaitChains(before + 100, T), $"no traffic after reconnect: {be.Chains}\n{tp.Tail()}");
            }
            catch
            {
                output.WriteLine(be.LogText);
                output.WriteLine(tp.Tail(60));
                throw;
            }
        }
        finally
        {
            tp.Dispose();
        }
    }

    [Fact]
    public async Task QemuGuestVirtioNetStartsTheDevice()
    {
        using var dir = new PeerTempDir("core");
        var sock = dir.File("vh.sock");
        using var be = new InProcessBackEnd(sock);
        var r = await QemuGuest.RunAsync(SharedHarness.LocalGuestScript("net-link-up.sh"), QemuGuest.NetDeviceArgs(sock), dir,
            TimeSpan.FromSeconds(150));
        output.WriteLine(r.ToString());
        output.WriteLine($"features at new 0x{be.Ops.FeaturesAtNew:x}; {be.AtNew}; guest TX chains {be.Chains}");
        if (r.ExitCode != 0 || be.AtNew == null) output.WriteLine(be.LogText);
        Assert.True(r.ExitCode == 0, $"guest failed: {r}");
        Assert.True(be.Ops.Saw("new"), $"new_device never fired; events {string.Join(", ", be.Ops.Log)}");
        Assert.True(VirtioFeature.Has(be.Ops.FeaturesAtNew, VirtioFeature.Version1));
        Assert.True(be.AtNew!.MemoryRegions > 0, "no memory mapped at new_device");
        Assert.All(be.AtNew.QueuesReady, Assert.True);
        // QEMU ends with the guest: the device goes away
        be.Ops.WaitFor("destroy", T);
        Assert.Empty(be.Logs.Errors);
    }
}
