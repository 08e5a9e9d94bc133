using System.Diagnostics.Metrics;
using Vhost.Testing.BackEnd;
using Vhost.Testing.FrontEnd;

namespace Vhost.Net.Tests;

public sealed class NetMetricsTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(5);

    [Fact]
    public void SeriesOfADeviceThatWentAwayAreForgotten()
    {
        // declared before the back-end so it outlives the Disconnected handler
        using var gone = new SemaphoreSlim(0);
        using var be = new TestBackEnd(extraFeatures: NetFeatures.Default);
        var ours = new HashSet<int>();
        var series = new HashSet<(int Device, int Queue)>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter == NetMetrics.Meter) l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((_, _, tags, _) =>
        {
            int device = -1, queue = -1;
            foreach (var t in tags)
            {
                if (t.Key == "device") device = (int)t.Value!;
                else if (t.Key == "queue") queue = (int)t.Value!;
            }
            // other tests' devices report through the same static meter
            if (ours.Contains(device)) series.Add((device, queue));
        });
        listener.Start();
        be.Socket.Disconnected += _ => gone.Release();

        for (int round = 0; round < 20; round++)
        {
            using (var fe = be.Connect())
            using (var setup = DeviceSetup.Run(fe))
            {
                be.Ops.WaitFor("new", T);
                var dev = be.Ops.LastNew!;
                ours.Add(dev.Id);
                VirtioNet.Stats(dev, 0);
                VirtioNet.Stats(dev, 1);
                series.Clear();
                listener.RecordObservableInstruments();
                Assert.True(series.Count == 2, $"round {round}: {series.Count} series observed, expected this device's 2 queues");
            }
            Assert.True(gone.Wait(T), $"round {round}: the connection never ended");
        }
        series.Clear();
        listener.RecordObservableInstruments();
        Assert.Empty(series);
    }
}
