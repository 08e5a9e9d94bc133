namespace Vhost.Rings;

/// <summary>
/// How a device type wants the ring engine to treat one of its queues. The core has no idea what a queue carries;
/// a device library that knows (Vhost.Net: the guest's transmit queues are only read) says so here, under a lease
/// (<see cref="VirtqueueBurst.Policy"/>), and the choice holds for the queue's life unless set again.
/// </summary>
public readonly record struct QueuePolicy
{
    /// <summary>Every queue's policy until its device type says otherwise: the virtio rules, nothing more.</summary>
    public static QueuePolicy Default => default;

    /// <summary>
    /// The device only reads this queue's buffers (a net transmit queue): WRITE flags are ignored and every buffer
    /// counts as readable. Nothing is ever written there, so this is safe, and it is needed: DPDK's virtio PMD leaves
    /// WRITE set on the header entry of its packed indirect tables (DPDK's vhost never looks).
    /// </summary>
    public bool DeviceReadsOnly { get; init; }

    /// <summary>
    /// The device returns every chain of a burst in the order it popped them, in the same flush (Vhost.Net's
    /// transmit queues): with VIRTIO_F_IN_ORDER negotiated on a packed ring, a flush then returns a batch of
    /// zero-length chains with one used descriptor.
    /// </summary>
    public bool BatchInOrderUsed { get; init; }

    /// <summary>
    /// Whether Take may hold back the return of what it took, on a packed ring where one used descriptor returns a
    /// batch (VIRTIO_F_IN_ORDER with <see cref="BatchInOrderUsed"/>): while every Take gets all it asked for, the used
    /// descriptor is written once three quarters of the ring are held instead of once per Take. A Take that comes up
    /// short, any other used write, disabling the ring and GET_VRING_BASE return them at once. Each used descriptor
    /// is a ring line the driver must fetch back from our cache before it reuses it (docs/benchmarks.md, tenth session).
    /// </summary>
    public bool HoldTakenReturns { get; init; }

    /// <summary>
    /// Whether Take evicts from the CPU caches the lines of each buffer it has handed to the taker, past its first
    /// <see cref="TakenLineEvictionSkip"/> bytes (contents kept). Only Take's one-descriptor buffers, not Pop's.
    /// </summary>
    public LineEviction TakenLineEviction { get; init; }

    /// <summary>
    /// Bytes at the start of each taken buffer that are not evicted: a device header the driver reads back (DPDK's
    /// virtio compares its net header before writing it) is better left where it is.
    /// </summary>
    public int TakenLineEvictionSkip { get; init; }
}
