using Vhost.Interop;
using Vhost.Protocol;
using Vhost.Rings;
using Vhost.Testing.BackEnd;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;

namespace Vhost.Tests.Rings;

/// <summary>
/// Chains of one direct descriptor take the rings' fast path; with an in-flight area they must be recorded
/// and cleared like any other chain, on both ring formats.
/// </summary>
public sealed class InflightFastPathTests
{
    private const ulong Inflight = 1UL << (int)ProtocolFeature.InflightShmfd;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void OneDescriptorChainsAreTracked(bool packed)
    {
        using var be = new TestBackEnd(maxQueues: 1, extraProtocolFeatures: Inflight);
        using var fe = be.Connect();
        using var setup = new DeviceSetup(fe, new DeviceSetupOptions
        {
            Packed = packed,
            QueueCount = 1,
            QueueSize = 8,
            ProtocolFeatures = DeviceSetupOptions.DefaultProtocolFeatures | Inflight,
        });
        setup.Negotiate();
        setup.SendMemTable();
        var (info, fd) = InflightRestart.ShareArea(fe, 1, 8);
        using var areaFd = fd;
        using var area = MemoryMapping.Map(areaFd, (nuint)info.MmapSize);
        var q = setup.SetUpQueue(0);
        setup.EnableQueues();
        be.Ops.WaitFor("new");
        var vq = be.Ops.LastNew!.Queue(0);
        var ring = DriverRing.Create(q, setup.Memory);
        Assert.True(vq.InflightTracking);
        // split: 16-byte header, 16-byte entries indexed by head; packed: 32-byte header, 32-byte entries
        nuint Entry(int e) => packed ? (nuint)(32 + 32 * e) : (nuint)(16 + 16 * e);
        var chains = new DescriptorChain[4];
        var segs = new BufferSegment[8];
        for (int round = 0; round < 12; round++)
        {
            ushort id = ring.Add(new DriverBuffer(setup.Memory.Allocate(64), 64, true));
            using (vq.AccessLock.EnterScope())
            {
                Assert.Equal(1, vq.Pop(chains, segs));
                Assert.Equal(id, chains[0].Id);
            }
            int marked = 0;
            for (int e = 0; e < 8; e++)
            {
                if (area.Window.Ref<byte>(Entry(e)) != 1) continue;
                marked++;
                if (packed) Assert.Equal(id, area.Window.Ref<ushort>(Entry(e) + 16));
                else Assert.Equal(id, e);
            }
            Assert.Equal(1, marked);
            using (vq.AccessLock.EnterScope())
            {
                vq.PushUsed(chains[0], 64);
                vq.FlushUsed();
            }
            Assert.Equal(id, ring.WaitUsed(TimeSpan.FromSeconds(5)).Id);
            for (int e = 0; e < 8; e++) Assert.Equal(0, area.Window.Ref<byte>(Entry(e)));
        }
    }
}
