using Vhost.Rings;
using Vhost.Testing.BackEnd;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;

namespace Vhost.Tests.Rings;

/// <summary>The ring on a device brought up by the kit: interrupts counted on the call eventfd, base via GET_VRING_BASE.</summary>
public sealed class RingDeviceTests
{
    [Theory]
    [InlineData(false, 70u, 1)]
    [InlineData(true, 6u | (6u << 16), 70)] // 70 slots through 64: index 6, wrap counter flipped to 0, for avail and used alike
    public void SeventyChainsThenGetVringBase(bool packed, uint expectedBase, int expectedInterrupts)
    {
        using var be = new TestBackEnd();
        using var fe = be.Connect();
        using var setup = DeviceSetup.Run(fe, new DeviceSetupOptions { QueueSize = 64, Packed = packed });
        be.Ops.WaitFor("new");
        var dev = be.Ops.LastNew!;
        var ring = DriverRing.Create(setup[0], setup.Memory);
        var q = dev.Queue(0);
        ulong buf = setup.Memory.Allocate(64);
        var chains = new DescriptorChain[4];
        var segs = new BufferSegment[8];
        ulong interrupts = 0;
        for (int i = 0; i < 70; i++)
        {
            ushort id = ring.Add(new DriverBuffer(buf, 64, true));
            using (q.AccessLock.EnterScope())
            {
                Assert.Equal(1, q.Pop(chains, segs));
                q.PushUsed(chains[0], 1);
                q.FlushUsed();
            }
            Assert.Equal(new UsedElement(id, 1), ring.WaitUsed(TimeSpan.FromSeconds(5)));
            interrupts += setup[0].ConsumeCalls();
        }
        // split: event idx is negotiated and the kit's driver leaves used_event at 0, so only the first
        // completion crosses it; packed: the driver event area stays at 0 = ENABLE, every flush interrupts
        Assert.Equal((ulong)expectedInterrupts, interrupts);
        Assert.Equal(expectedInterrupts, be.Ops.Notified);
        Assert.Equal(expectedBase, setup.StopQueue(0));
    }
}
