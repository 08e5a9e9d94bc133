namespace Vhost.Rings;

/// <summary>
/// Front-end behaviour a device type may have to tolerate, chosen per socket (<see cref="Device.VhostSocketOptions.RingQuirks"/>).
/// None is the default and keeps the vhost-user rules; QEMU 7.2's cryptodev-vhost-user needs all three, because it
/// tells the back-end only VHOST_USER_F_PROTOCOL_FEATURES while the guest negotiated its ring features with QEMU.
/// </summary>
[Flags]
public enum RingQuirks
{
    /// <summary>The front-end keeps every ring rule.</summary>
    None = 0,

    /// <summary>A ring is enabled once it has addresses and a kick fd, even with protocol features negotiated (no SET_VRING_ENABLE ever comes).</summary>
    LiveOnKick = 1,

    /// <summary>avail_event is written in the used ring even without VIRTIO_RING_F_EVENT_IDX negotiated: the guest may use it.</summary>
    AlwaysWriteAvailEvent = 2,

    /// <summary>Indirect descriptors are followed even without VIRTIO_RING_F_INDIRECT_DESC negotiated: the guest may use them.</summary>
    IndirectWithoutNegotiation = 4,
}
