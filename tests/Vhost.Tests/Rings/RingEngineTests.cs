using Vhost.Protocol;
using Vhost.Rings;
using Vhost.Testing.Rings;
using Xunit;

namespace Vhost.Tests.Rings;

/// <summary>The control plane and its ring engine: what the engine runs with is fixed between a start and the next stop.</summary>
public sealed class RingEngineTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ASizeChangedWhileTheRingRunsWaitsForTheNextStart(bool packed)
    {
        using var h = new RingHarness(packed, size: 64, eventIdx: true);
        // a front-end may send SET_VRING_NUM at any time; the running engine must not read its rings with it
        Assert.Null(h.Queue.SetSize(packed ? 500u : 1024u));
        for (int i = 0; i < 200; i++)
        {
            ulong buf = h.Memory.Allocate(64);
            ushort id = h.Driver.Add(new DriverBuffer(buf, 64, true));
            var c = h.PopOneAndComplete(8);
            Assert.Equal(id, c.Id);
            Assert.True(h.Driver.TryGetUsed(out var used));
            Assert.Equal(new UsedElement(id, 8), used);
        }
        Assert.Null(h.Fault);
        Assert.Equal(0, h.Queue.BadChains);
    }

    [Fact]
    public void AStoppedQueueTakesTheEngineOfTheNewFormat()
    {
        using var h = new RingHarness(packed: false);
        h.Queue.Stop();
        // the same queue renegotiated as packed (a reset and a new SET_FEATURES)
        h.Queue.SetFeatures(VirtioFeature.Bit(VirtioFeature.RingPacked));
        Assert.Null(h.Queue.SetBase(0x8000));
        Assert.True(h.Queue.IsPacked);
        var setup = h.Setup with { Packed = true };
        Assert.Null(h.Queue.Start(h.Guest));
        var driver = DriverRing.Create(setup, h.Memory);
        ulong buf = h.Memory.Allocate(64);
        ushort id = driver.Add(new DriverBuffer(buf, 64, false));
        Assert.Equal(1, h.Pop());
        Assert.Equal(id, h.Chains[0].Id);
        Assert.Equal(64u, h.Chains[0].ReadableBytes);
    }
}
