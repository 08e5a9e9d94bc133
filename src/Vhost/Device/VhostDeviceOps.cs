namespace Vhost.Device;

/// <summary>
/// The application's view of a device's life: the six callbacks of DPDK's rte_vhost_device_ops,
/// with the same meaning. Override what you need. They run on the device's connection thread
/// (except <see cref="GuestNotified"/> and <see cref="GuestNotify"/>, which run on whichever thread
/// completes work on a queue), so keep them short.
/// </summary>
public abstract class VhostDeviceOps
{
    /// <summary>new_device: features set, memory mapped, rings usable. Return false to refuse for now
    /// (the library asks again after the next message).</summary>
    public virtual bool NewDevice(VhostDevice device) => true;

    /// <summary>destroy_device: the connection closed, the device was reset, or a ring was stopped.
    /// When it returns, the application must no longer poll the device.</summary>
    public virtual void DestroyDevice(VhostDevice device) { }

    /// <summary>vring_state_changed: SET_VRING_ENABLE for <paramref name="queueId"/>.</summary>
    public virtual void VringStateChanged(VhostDevice device, int queueId, bool enable) { }

    /// <summary>features_changed: SET_FEATURES changed the set while the device ran (e.g. VHOST_F_LOG_ALL).</summary>
    public virtual void FeaturesChanged(VhostDevice device, ulong features) { }

    /// <summary>guest_notified: the library just wrote a call eventfd.</summary>
    public virtual void GuestNotified(VhostDevice device) { }

    /// <summary>guest_notify: return true to take the interrupt over; the application then calls
    /// <see cref="VhostDevice.NotifyGuest(int)"/> itself later, off the data path.</summary>
    public virtual bool GuestNotify(VhostDevice device, int queueId) => false;
}

/// <summary>Device-type hook for GET_CONFIG/SET_CONFIG (blk, crypto, ...).</summary>
public interface IDeviceConfigSpace
{
    /// <summary>Fills <paramref name="destination"/> with config bytes from <paramref name="offset"/>; false to refuse.</summary>
    bool Read(VhostDevice device, uint offset, Span<byte> destination);

    /// <summary>The front-end writes config bytes; false to refuse.</summary>
    bool Write(VhostDevice device, uint offset, ReadOnlySpan<byte> data, uint flags);
}

/// <summary>
/// Device-type hook for the crypto session messages (vhost_crypto's session part in DPDK). Both run on the device's
/// connection thread; the handler keeps the sessions per device and drops them when <see cref="VhostDevice.Closed"/> fires.
/// </summary>
public interface ICryptoSessionHandler
{
    /// <summary>
    /// CREATE_CRYPTO_SESSION: <paramref name="reply"/> is a copy of <paramref name="request"/> (the reply has the same
    /// size); the handler writes the session id, negative on failure, where the request's layout keeps it. Returns
    /// null when the reply is ready (a refused session, even one of no known layout, is a reply with a negative id),
    /// or why the connection must close instead.
    /// </summary>
    string? CreateSession(VhostDevice device, ReadOnlySpan<byte> request, Span<byte> reply);

    /// <summary>CLOSE_CRYPTO_SESSION (no reply). Returns null, or why the id was refused (logged; the device carries on).</summary>
    string? CloseSession(VhostDevice device, ulong sessionId);
}
