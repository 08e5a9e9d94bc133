using System.Collections.Concurrent;
using Vhost.Device;

namespace Vhost.Testing.BackEnd;

/// <summary>Records every callback, in order, so tests can wait for and assert on them.</summary>
internal sealed class RecordingOps : VhostDeviceOps
{
    private readonly BlockingCollection<string> _events = [];

    public ConcurrentQueue<string> Log { get; } = new();

    public VhostDevice? LastNew { get; private set; }

    public ulong FeaturesAtNew { get; private set; }

    public int Notified;

    public Func<VhostDevice, int, bool>? NotifyHook { get; set; }

    public Func<VhostDevice, bool>? NewHook { get; set; }

    private void Add(string e)
    {
        Log.Enqueue(e);
        _events.Add(e);
    }

    public override bool NewDevice(VhostDevice device)
    {
        if (NewHook != null && !NewHook(device)) return false;
        LastNew = device;
        FeaturesAtNew = device.Features;
        Add($"new {device.Id}");
        return true;
    }

    public override void DestroyDevice(VhostDevice device) => Add($"destroy {device.Id}");

    public override void VringStateChanged(VhostDevice device, int queueId, bool enable) => Add($"vring {device.Id} {queueId} {(enable ? 1 : 0)}");

    public override void FeaturesChanged(VhostDevice device, ulong features) => Add($"features {device.Id} 0x{features:x}");

    public override void GuestNotified(VhostDevice device) => Interlocked.Increment(ref Notified);

    public override bool GuestNotify(VhostDevice device, int queueId) => NotifyHook?.Invoke(device, queueId) ?? false;

    /// <summary>Waits for the next event that starts with <paramref name="prefix"/>, skipping others.</summary>
    public string WaitFor(string prefix, TimeSpan? timeout = null)
    {
        var end = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(10));
        while (true)
        {
            var left = end - DateTime.UtcNow;
            if (left <= TimeSpan.Zero || !_events.TryTake(out var e, left))
                throw new TimeoutException($"no '{prefix}' event; seen: {string.Join(", ", Log)}");
            if (e.StartsWith(prefix, StringComparison.Ordinal)) return e;
        }
    }

    public bool Saw(string prefix) => Log.Any(e => e.StartsWith(prefix, StringComparison.Ordinal));
}
