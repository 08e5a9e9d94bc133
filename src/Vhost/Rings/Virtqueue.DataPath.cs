namespace Vhost.Rings;

// Placeholder for the data path (split and packed rings); replaced by the ring implementation.
public sealed partial class Virtqueue
{
    private uint _base;

    private void SetBaseCore(uint value) => _base = value;

    private uint GetBaseCore() => _base;

    private void OnStarted() { }

    /// <summary>Pops up to chains.Length available chains whose segments fit into <paramref name="segments"/>.</summary>
    public int Pop(Span<DescriptorChain> chains, Span<BufferSegment> segments) => 0;

    /// <summary>Stages a used element; nothing is visible to the driver until <see cref="FlushUsed"/>.</summary>
    public void PushUsed(in DescriptorChain chain, uint writtenBytes) { }

    /// <summary>Publishes staged used elements and interrupts the guest if it asked for that.</summary>
    public void FlushUsed() { }

    /// <summary>Asks the driver to kick (true) or not to (false).</summary>
    public void SetNotificationsEnabled(bool enabled) { }
}
