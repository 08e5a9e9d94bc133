using System.Collections.Concurrent;
using System.Diagnostics.Metrics;

namespace Vhost.Device;

/// <summary>
/// The IOTLB counters through System.Diagnostics.Metrics (meter "Vhost.Iotlb"): lookups per queue (hits, misses)
/// and the messages per device (updates, invalidations, refusals) and evictions, for every device that has
/// negotiated VIRTIO_F_ACCESS_PLATFORM, until it closes.
/// </summary>
internal static class IotlbMetrics
{
    public static readonly Meter Meter = new("Vhost.Iotlb");
    private static readonly ConcurrentDictionary<int, VhostDevice> Devices = new();

    static IotlbMetrics()
    {
        Meter.CreateObservableCounter("vhost.iotlb.hits", () => PerQueue(q => q.IotlbHits), "{lookup}", "IOTLB lookups that found their entry");
        Meter.CreateObservableCounter("vhost.iotlb.misses", () => PerQueue(q => q.IotlbMisses), "{lookup}", "IOTLB lookups that found no entry");
        Meter.CreateObservableCounter("vhost.iotlb.updates", () => PerDevice(d => d.Iotlb?.Updates ?? 0), "{message}", "IOTLB updates applied");
        Meter.CreateObservableCounter("vhost.iotlb.invalidations", () => PerDevice(d => d.Iotlb?.Invalidations ?? 0), "{message}", "IOTLB invalidations applied");
        Meter.CreateObservableCounter("vhost.iotlb.evictions", () => PerDevice(d => d.Iotlb?.Evictions ?? 0), "{entry}", "IOTLB entries evicted by the size limit");
        Meter.CreateObservableCounter("vhost.iotlb.refused", () => PerDevice(d => d.IotlbRefused), "{message}", "IOTLB messages refused");
    }

    internal static void Register(VhostDevice device)
    {
        if (!Devices.TryAdd(device.Id, device)) return;
        device.Closed.Register(static d => Devices.TryRemove(((VhostDevice)d!).Id, out _), device);
    }

    private static IEnumerable<Measurement<long>> PerDevice(Func<VhostDevice, long> pick) =>
        Devices.Values.Select(d => new Measurement<long>(pick(d), new KeyValuePair<string, object?>("device", d.Id)));

    private static IEnumerable<Measurement<long>> PerQueue(Func<Rings.Virtqueue, long> pick) =>
        Devices.Values.SelectMany(d => d.Queues.Select(q => new Measurement<long>(pick(q),
            new KeyValuePair<string, object?>("device", d.Id), new KeyValuePair<string, object?>("queue", q.Index))));
}
