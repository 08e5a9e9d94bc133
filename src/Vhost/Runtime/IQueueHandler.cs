using Vhost.Device;

namespace Vhost.Runtime;

/// <summary>How the runtime drives a queue's handler.</summary>
public enum QueueMode
{
    /// <summary>Woken by the front-end's kicks (DPDK's interrupt mode): costs nothing while the queue is idle.</summary>
    Event,

    /// <summary>Busy-polled by a thread of a <see cref="PollGroup"/> with other queues (DPDK's lcores, OVS's PMD threads).</summary>
    Polling,
}

/// <summary>
/// Device code the runtime calls for one queue (the shape of rust-vmm's VhostUserBackend::handle_event): on a kick
/// or on each pass of its poll thread, and when off-thread work posted completions. It touches the ring only
/// through a <see cref="Rings.VirtqueueBurst"/> taken with <see cref="Rings.Virtqueue.TryBeginBurst"/>, one per burst.
/// An exception from it faults its device (one error line, the connection closed), never the process.
/// </summary>
public interface IQueueHandler
{
    /// <summary>
    /// Serves queue <paramref name="queue"/> of <paramref name="device"/>. Returns true when work is left (a burst
    /// budget ran out, or the queue was busy): in event mode the runtime calls again on its next turn, after other
    /// devices had theirs, without waiting for a kick. In polling mode the result tells the poll thread it was busy.
    /// </summary>
    bool Serve(VhostDevice device, int queue);

    /// <summary>
    /// Off-thread work on the queue posted completions (<see cref="Rings.Virtqueue.PostCompletion"/>): publish them.
    /// Returns true when some could not be published yet (called again soon).
    /// </summary>
    bool Complete(VhostDevice device, int queue) => false;
}
