using System.Runtime.CompilerServices;
using Vhost.Memory;

namespace Vhost.Rings;

/// <summary>
/// A lease on one virtqueue for one burst: the only door through which device code touches a ring. While it is
/// held, the control plane cannot change the queue's memory, addresses, fds or state (it waits for the burst to
/// end), so every window the burst hands out stays valid until <see cref="Dispose"/>. Work that outlives the burst
/// (a blk request on an I/O thread) takes a <see cref="QueueWork"/> with <see cref="BeginWork"/>, which keeps the
/// memory generation mapped and makes GET_VRING_BASE wait for its completion.
/// Take it with <see cref="Virtqueue.TryBeginBurst"/>; never keep it across bursts or hand it to another thread.
/// </summary>
public readonly ref struct VirtqueueBurst
{
    private readonly Virtqueue? _queue;

    internal VirtqueueBurst(Virtqueue queue) => _queue = queue;

    /// <summary>Whether the lease is held (false for a default value).</summary>
    public bool IsActive => _queue != null;

    /// <summary>The queue this lease is for; throws on a default lease.</summary>
    public Virtqueue Queue => _queue ?? throw new InvalidOperationException("no burst is held");

    /// <summary>The memory generation the ring runs on; valid for this burst.</summary>
    public GuestMemory Memory => Queue.Memory;

    /// <summary>The queue's data-path policy, set by its device type (once, or again when it changes its mind).</summary>
    public QueuePolicy Policy
    {
        get => Queue.Policy;
        set => Queue.Policy = value;
    }

    /// <summary>Chains waiting (split: exact; packed: 0 or 1, "at least one").</summary>
    public int AvailableCount => Queue.AvailableCount;

    /// <summary>Whether the driver has made buffers available that have not been popped yet.</summary>
    public bool HasAvailable => Queue.HasAvailable;

    /// <inheritdoc cref="Virtqueue.NothingToPop"/>
    public bool NothingToPop => Queue.NothingToPop;

    /// <inheritdoc cref="Virtqueue.Pop"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Pop(Span<DescriptorChain> chains, Span<BufferSegment> segments) => Queue.Pop(chains, segments);

    /// <inheritdoc cref="Virtqueue.Fill"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Fill<TFiller>(ref TFiller filler, int count) where TFiller : IBufferFiller, allows ref struct =>
        Queue.Fill(ref filler, count);

    /// <inheritdoc cref="Virtqueue.Take"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Take<TTaker>(ref TTaker taker, int count) where TTaker : IBufferTaker, allows ref struct =>
        Queue.Take(ref taker, count);

    /// <inheritdoc cref="Virtqueue.Rewind"/>
    public void Rewind(ReadOnlySpan<DescriptorChain> chains) => Queue.Rewind(chains);

    /// <summary>
    /// Stages a used element; nothing is visible to the driver until <see cref="FlushUsed"/>. Marks nothing in the
    /// dirty log: a device that wrote into the chain uses the overload with the segments (or <see cref="LogWritten"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void PushUsed(in DescriptorChain chain, uint writtenBytes) => Queue.PushUsed(chain.Id, chain.SlotCount, writtenBytes);

    /// <summary>Stages a used element by buffer id and slot count, as <see cref="PushUsed(in DescriptorChain, uint)"/> does for a chain.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void PushUsed(ushort id, ushort slotCount, uint writtenBytes) => Queue.PushUsed(id, slotCount, writtenBytes);

    /// <summary>
    /// Stages a used element for a chain the device wrote <paramref name="writtenBytes"/> into, from the start of
    /// its writable segments (<paramref name="segments"/>: the span the chain was popped into); those bytes are
    /// marked in the dirty log when the front-end is logging for a migration.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void PushUsed(in DescriptorChain chain, uint writtenBytes, ReadOnlySpan<BufferSegment> segments)
    {
        var q = Queue;
        q.LogWritten(chain, segments, writtenBytes);
        q.PushUsed(chain.Id, chain.SlotCount, writtenBytes);
    }

    /// <summary>Whether the front-end is logging writes for a migration (see <see cref="LogWrite"/>).</summary>
    public bool Logging => Queue.Logging;

    /// <summary>
    /// Marks guest-physical [<paramref name="guestAddress"/>, +<paramref name="length"/>) dirty when the front-end is
    /// logging (rte_vhost_log_write): for bytes the device wrote into guest memory other than through
    /// <see cref="PushUsed(in DescriptorChain, uint, ReadOnlySpan{BufferSegment})"/> or <see cref="LogWritten"/>.
    /// Call it after the write; the bits reach the log when the burst ends.
    /// </summary>
    public void LogWrite(ulong guestAddress, ulong length) => Queue.LogWrite(guestAddress, length);

    /// <summary>Marks the first <paramref name="bytes"/> of the chain's writable segments dirty (when logging).</summary>
    public void LogWritten(in DescriptorChain chain, ReadOnlySpan<BufferSegment> segments, uint bytes) =>
        Queue.LogWritten(chain, segments, bytes);

    /// <summary>Publishes staged used elements and interrupts the guest if it asked for that.</summary>
    public void FlushUsed() => Queue.FlushUsed();

    /// <summary>Asks the driver to kick (true) or not to (false).</summary>
    public void SetNotificationsEnabled(bool enabled) => Queue.SetNotificationsEnabled(enabled);

    /// <summary>
    /// Starts work on <paramref name="chain"/> that will finish after this burst, on another thread: the
    /// returned ticket keeps the memory generation (and so every segment of the chain) mapped, and the queue
    /// counts it in flight until <see cref="Complete"/> is called for it in a later burst.
    /// </summary>
    public QueueWork BeginWork(in DescriptorChain chain) => Queue.BeginWork(chain);

    /// <summary>Completes off-thread work: stages its used element and releases what the ticket held.</summary>
    public void Complete(ref QueueWork work, uint writtenBytes) => Queue.CompleteWork(ref work, writtenBytes, push: true);

    /// <summary>Ends the burst: the control plane may change the queue again.</summary>
    public void Dispose() => _queue?.EndBurst();
}

/// <summary>
/// Work begun in a burst and finished after it (see <see cref="VirtqueueBurst.BeginWork"/>): the chain to
/// return and the memory generation its buffers live in. A plain value: nothing is allocated per request.
/// </summary>
public struct QueueWork
{
    internal GuestMemory? Memory;
    internal ushort Id;
    internal ushort SlotCount;

    /// <summary>Whether the ticket still holds its generation (not completed yet).</summary>
    public readonly bool IsPending => Memory != null;
}
