using Vhost.Memory;

namespace Vhost.Rings;

/// <summary>
/// A virtqueue under a vIOMMU: its ring addresses are IOVAs. The rings are translated through the device's IOTLB
/// when the queue starts and again when an invalidation covers them; while an entry is missing the queue stays
/// started (for the control plane and the application) but rests: no burst runs until the update comes.
/// </summary>
public sealed partial class Virtqueue
{
    private enum Parked : byte
    {
        None,
        /// <summary>Started, but the rings were never translated: the engine starts once they are.</summary>
        Start,
        /// <summary>Running until an invalidation took the rings' entries: it goes on where it was once they are back.</summary>
        Resume,
    }

    private Parked _parked;
    private volatile bool _awaitingIotlb;

    /// <summary>The device's IOTLB when VIRTIO_F_ACCESS_PLATFORM is negotiated, else null (set under the lease).</summary>
    internal IoTlb? Iotlb { get; private set; }

    internal void SetIotlb(IoTlb? iotlb) => Iotlb = iotlb;

    /// <summary>Whether the engine has its rings and runs (started, and not resting for IOTLB entries).</summary>
    internal bool RingAttached => Started && _parked == Parked.None;

    /// <summary>Whether the rings wait for IOTLB entries (the queue counts as started but runs no burst).</summary>
    public bool RingsAwaitIotlb => Started && _parked != Parked.None;

    /// <summary>A lookup of this queue missed and asked the front-end; the next IOTLB update wakes it.</summary>
    public bool AwaitingIotlb
    {
        get => _awaitingIotlb;
        internal set => _awaitingIotlb = value;
    }

    /// <summary>IOTLB lookups of this queue's descriptors that found their entry.</summary>
    public long IotlbHits => _ring.IotlbHits;

    /// <summary>IOTLB lookups of this queue's descriptors that found none (each sent as a miss unless one was pending).</summary>
    public long IotlbMisses => _ring.IotlbMisses;

    internal void SendIotlbMiss(ulong iova, IotlbAccess access) => _notifier?.IotlbMiss(this, iova, access);

    /// <summary>Tries again to translate resting rings (under the lease); true when the ring runs now.</summary>
    internal bool TryUnpark()
    {
        if (_parked == Parked.None) return RingAttached;
        if (Remap(_memory) is { } error) Fault(error);
        return RingAttached && !Faulted;
    }

    /// <summary>Whether an invalidation of IOVAs [first, last] takes an entry this queue's rings use.</summary>
    internal bool RingsOverlap(ulong first, ulong last)
    {
        if (Iotlb == null || !RingAttached || Address is not { } a) return false;
        ulong n = (ulong)Size;
        return IoTlb.Overlaps(a.DescUserAddr, 16 * n, first, last)
            || IoTlb.Overlaps(a.AvailUserAddr, IsPacked ? 4 : 6 + 2 * n, first, last)
            || IoTlb.Overlaps(a.UsedUserAddr, IsPacked ? 4 : 6 + 8 * n, first, last);
    }
}
