using Vhost.Testing.FrontEnd;

namespace Vhost.Blk.Tests;

/// <summary>Who may connect to a blk socket: one front-end at a time, as qemu-storage-daemon serves a disk.</summary>
public sealed class BlkConnectionTests
{
    [Fact]
    public void AThirdConnectionIsRefusedWhileTwoServeAndAcceptedAfterOneLeaves()
    {
        using var h = new BlkHarness();
        // the second is the destination of a live migration on the same host: served beside the first
        using var second = TestFrontEnd.Connect(h.Socket.Path, BlkHarness.T);
        using (var setup2 = DeviceSetup.Run(second, new DeviceSetupOptions { QueueCount = 1, QueueSize = 64 }))
        {
            Assert.Equal(2, h.Socket.Devices.Count);
        }
        using (var third = TestFrontEnd.Connect(h.Socket.Path, BlkHarness.T))
        {
            Assert.True(third.IsClosedByPeer(BlkHarness.T), "the third connection was not closed");
        }
        Assert.Single(h.Logs.Errors, e => e.Contains("at most 2", StringComparison.Ordinal));
        Assert.Equal(2, h.Socket.Devices.Count);
        h.AssertStillServes();

        using var gone = new ManualResetEventSlim();
        h.Socket.Disconnected += _ => gone.Set();
        h.Fe.Shutdown();
        Assert.True(gone.Wait(BlkHarness.T), "the first connection never ended");

        using var fourth = TestFrontEnd.Connect(h.Socket.Path, BlkHarness.T);
        // every step is acked: a refused connection would have thrown here
        using var setup = DeviceSetup.Run(fourth, new DeviceSetupOptions { QueueCount = 1, QueueSize = 64 });
        Assert.Equal(2, h.Socket.Devices.Count);
        Assert.All(h.Socket.Devices, d => Assert.Null(d.FaultReason));
    }
}
