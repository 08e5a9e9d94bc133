using System.Diagnostics.Metrics;
using Vhost.Protocol;
using Vhost.Testing.BackEnd;
using Vhost.Testing.FrontEnd;

namespace Vhost.Net.Tests;

/// <summary>The meter's per-queue series: one per queue of a live device, none left by devices that are gone.</summary>
public sealed class NetMetricsTests
{
    private static int ServeAndClose()
    {
        using var be = new TestBackEnd(extraFeatures: NetFeatures.Default);
        using var fe = be.Connect();
        ulong want = ~(VirtioFeature.Bit(VirtioFeature.LogAll) | VirtioFeature.Bit(VirtioFeature.AccessPlatform) | VirtioFeature.Bit(VirtioFeature.RingPacked));
        using var setup = DeviceSetup.Run(fe, new DeviceSetupOptions { QueueSize = 64, MemorySize = 1 << 20, Features = want });
        be.Ops.WaitFor("new");
        var dev = be.Ops.LastNew!;
        // the first look at a queue's statistics registers its series
        _ = VirtioNet.Stats(dev, 0);
        _ = VirtioNet.Stats(dev, 1);
        // while the device lives its series are there (the listener sees what it should)
        Assert.Contains(dev.Id, DevicesReported());
        return dev.Id;
    }

    private static HashSet<int> DevicesReported()
    {
        var seen = new HashSet<int>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (i, l) =>
        {
            if (i.Meter == NetMetrics.Meter && i.Name == "vhost.net.packets") l.EnableMeasurementEvents(i);
        };
        listener.SetMeasurementEventCallback<long>((_, _, tags, _) =>
        {
            foreach (var t in tags)
                if (t.Key == "device" && t.Value is int id) lock (seen) seen.Add(id);
        });
        listener.Start();
        listener.RecordObservableInstruments();
        return seen;
    }

    /// <summary>A front-end reconnecting in a loop must not grow the back-end's memory: each connection is a new device id.</summary>
    [Fact]
    public void ADeviceThatIsGoneLeavesNoSeriesBehind()
    {
        int first = ServeAndClose();
        int second = ServeAndClose();
        var reported = DevicesReported();
        Assert.DoesNotContain(first, reported);
        Assert.DoesNotContain(second, reported);
    }
}
