using Vhost.Device;
using Vhost.Rings;
using Vhost.Runtime;
using Vhost.Testing.BackEnd;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;

namespace Vhost.Tests.Device;

/// <summary>An exception from device code or from the application faults that device: one error line, its connection closed, nothing else touched.</summary>
public sealed class FaultContainmentTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(5);

    private sealed class ThrowingHandler : IQueueHandler
    {
        public bool Serve(VhostDevice device, int queue) => throw new InvalidOperationException("handler bug");
    }

    /// <summary>Pops and completes whatever is there, for the device that must keep working.</summary>
    private sealed class EchoHandler : IQueueHandler
    {
        private readonly DescriptorChain[] _chains = new DescriptorChain[8];
        private readonly BufferSegment[] _segs = new BufferSegment[32];

        public bool Serve(VhostDevice device, int queue)
        {
            if (!device.Queue(queue).TryBeginBurst(out var burst)) return device.Queue(queue).Started;
            using (burst)
            {
                int n = burst.Pop(_chains, _segs);
                for (int i = 0; i < n; i++) burst.PushUsed(_chains[i], 0);
                burst.FlushUsed();
            }
            return false;
        }
    }

    private static void AssertOtherDeviceServes(TestBackEnd be)
    {
        using var fe = be.Connect();
        using var setup = DeviceSetup.Run(fe, new DeviceSetupOptions { QueueSize = 64 });
        var ring = DriverRing.Create(setup[0], setup.Memory);
        ulong buf = setup.Memory.Allocate(64);
        ushort id = ring.Add(new DriverBuffer(buf, 64, false));
        setup[0].Kick();
        Assert.Equal(id, ring.WaitUsed(T).Id);
    }

    [Fact]
    public void AQueueHandlerThatThrowsFaultsItsDeviceOnly()
    {
        using var be = new TestBackEnd();
        bool first = true;
        be.Ops.NewHook = d =>
        {
            d.Serve(0, first ? new ThrowingHandler() : new EchoHandler());
            first = false;
            return true;
        };
        using (var fe = be.Connect())
        using (var setup = DeviceSetup.Run(fe, new DeviceSetupOptions { QueueSize = 64 }))
        {
            var ring = DriverRing.Create(setup[0], setup.Memory);
            ring.Add(new DriverBuffer(setup.Memory.Allocate(64), 64, false));
            setup[0].Kick();
            Assert.True(fe.IsClosedByPeer(T), "the faulted device's connection stayed open");
        }
        Assert.True(be.Logs.WaitForError("handler failed: InvalidOperationException: handler bug"));
        AssertOtherDeviceServes(be);
    }

    [Fact]
    public void ANewDeviceCallbackThatThrowsFaultsItsDeviceOnly()
    {
        using var be = new TestBackEnd();
        bool first = true;
        be.Ops.NewHook = d =>
        {
            if (first)
            {
                first = false;
                throw new InvalidOperationException("application bug");
            }
            d.Serve(0, new EchoHandler());
            return true;
        };
        using (var fe = be.Connect())
        {
            using var setup = new DeviceSetup(fe, new DeviceSetupOptions { QueueSize = 64 });
            try
            {
                setup.Negotiate();
                setup.SendMemTable();
                for (int i = 0; i < setup.Options.QueueCount; i++) setup.SetUpQueue(i);
                setup.EnableQueues();
            }
            catch (Exception e) when (e is IOException or InvalidDataException or TimeoutException)
            {
                // the back-end may close while the set-up is still talking
            }
            Assert.True(fe.IsClosedByPeer(T), "the faulted device's connection stayed open");
        }
        Assert.True(be.Logs.WaitForError("NewDevice callback threw InvalidOperationException: application bug"));
        AssertOtherDeviceServes(be);
    }
}
