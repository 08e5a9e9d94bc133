using Vhost.Testing.FrontEnd;

namespace Vhost.Blk.Tests;

/// <summary>Who may connect to a blk socket: one front-end at a time, as qemu-storage-daemon serves a disk.</summary>
public sealed class BlkConnectionTests
{
    [Fact]
    public void ASecondConnectionIsRefusedWhileTheFirstServesAndAcceptedAfterItLeaves()
    {
        using var h = new BlkHarness();
        using (var second = TestFrontEnd.Connect(h.Socket.Path, BlkHarness.T))
        {
            Assert.True(second.IsClosedByPeer(BlkHarness.T), "the second connection was not closed");
        }
        Assert.Single(h.Logs.Errors, e => e.Contains("at most 1", StringComparison.Ordinal));
        Assert.Single(h.Socket.Devices);
        h.AssertStillServes();

        using var gone = new ManualResetEventSlim();
        h.Socket.Disconnected += _ => gone.Set();
        h.Fe.Shutdown();
        Assert.True(gone.Wait(BlkHarness.T), "the first connection never ended");

        using var third = TestFrontEnd.Connect(h.Socket.Path, BlkHarness.T);
        // every step is acked: a refused connection would have thrown here
        using var setup = DeviceSetup.Run(third, new DeviceSetupOptions { QueueCount = 1, QueueSize = 64 });
        var device = Assert.Single(h.Socket.Devices);
        Assert.Null(device.FaultReason);
    }
}
