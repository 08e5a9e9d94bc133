using Vhost.Interop;

namespace Vhost.Rings;

/// <summary>One piece of a descriptor chain's buffer, translated and bounds-checked.</summary>
public struct BufferSegment
{
    /// <summary>The segment's bytes in guest memory, bounds-checked.</summary>
    public NativeWindow Window;
    /// <summary>The guest-physical address of the window's first byte (what the dirty log marks).</summary>
    public ulong GuestAddress;
    /// <summary>Whether the device may write the segment (the driver reads it back), rather than only read it.</summary>
    public bool IsWritable;

    /// <summary>The segment's length in bytes.</summary>
    public readonly int Length => (int)Window.Length;
}

/// <summary>
/// A chain popped from the available ring. Its segments sit in the caller's segment span at
/// [SegmentStart, SegmentStart + SegmentCount): the readable ones first, then the writable ones.
/// </summary>
public struct DescriptorChain
{
    /// <summary>The id to return in the used ring: the head index (split) or the buffer id (packed).</summary>
    public ushort Id;
    /// <summary>Ring slots the chain occupied (packed rings advance by this; split: 1).</summary>
    public ushort SlotCount;
    /// <summary>Where the chain's first segment sits in the segment span it was popped with.</summary>
    public int SegmentStart;
    /// <summary>How many segments the chain has, readable and writable.</summary>
    public int SegmentCount;
    /// <summary>Number of readable segments; the writable ones follow them.</summary>
    public int ReadableSegments;
    /// <summary>The total length of the readable segments.</summary>
    public uint ReadableBytes;
    /// <summary>The total length of the writable segments.</summary>
    public uint WritableBytes;
}

/// <summary>The addresses of SET_VRING_ADDR (front-end virtual addresses unless IOMMU is on).</summary>
internal readonly record struct VringAddress(uint Index, uint Flags, ulong DescUserAddr, ulong UsedUserAddr, ulong AvailUserAddr, ulong LogGuestAddr)
{
    public const uint FlagLog = 1;
}

/// <summary>What a virtqueue needs from its device to signal the guest.</summary>
internal interface IGuestNotifier
{
    /// <summary>Interrupts the guest for <paramref name="queue"/> (or hands that to the application).</summary>
    void NotifyGuest(Virtqueue queue);

    /// <summary>The queue saw input it cannot trust; the device must stop. Called once per fault.</summary>
    void QueueFaulted(Virtqueue queue, string reason);

    /// <summary>Under a vIOMMU: asks the front-end for the translation of <paramref name="iova"/> (an IOTLB miss).
    /// Must not block; any thread.</summary>
    void IotlbMiss(Virtqueue queue, ulong iova, Memory.IotlbAccess access)
    {
    }
}

/// <summary>
/// What a device library gives <see cref="Virtqueue.Fill"/>: the items to place, one per guest buffer.
/// A ref struct may implement it, so the calls inline and nothing is allocated.
/// </summary>
public interface IBufferFiller
{
    /// <summary>Bytes item <paramref name="index"/> will write, or 0 to stop before it.</summary>
    int Needed(int index);

    /// <summary>Writes item <paramref name="index"/> into <paramref name="buffer"/> (exactly Needed bytes of guest memory).</summary>
    void Fill(int index, Span<byte> buffer);
}

/// <summary>
/// What a device library gives <see cref="Virtqueue.Take"/>: it consumes one guest buffer per call.
/// A ref struct may implement it, so the calls inline and nothing is allocated.
/// </summary>
public interface IBufferTaker
{
    /// <summary>
    /// Consumes <paramref name="buffer"/> as item <paramref name="index"/>; false declines it, touching
    /// nothing, and the buffer is left for the general path.
    /// </summary>
    bool Take(int index, ReadOnlySpan<byte> buffer);
}

/// <summary>Copies between a chain's segments and private memory, for device types that parse requests laid across descriptors.</summary>
public static class BufferSegments
{
    /// <summary>Copies <paramref name="destination"/>.Length bytes starting <paramref name="skip"/> bytes into the segments; false when they hold fewer.</summary>
    public static bool Gather(ReadOnlySpan<BufferSegment> segments, long skip, Span<byte> destination)
    {
        int done = 0;
        foreach (ref readonly var s in segments)
        {
            if (done == destination.Length) break;
            long segLen = (long)s.Window.Length;
            if (skip >= segLen)
            {
                skip -= segLen;
                continue;
            }
            int take = (int)Math.Min(segLen - skip, destination.Length - done);
            s.Window.Span((nuint)skip, take).CopyTo(destination[done..]);
            done += take;
            skip = 0;
        }
        return done == destination.Length;
    }

    /// <summary>Copies <paramref name="source"/> into the segments from <paramref name="skip"/> bytes on; false when they hold fewer bytes.</summary>
    public static bool Scatter(ReadOnlySpan<BufferSegment> segments, long skip, ReadOnlySpan<byte> source)
    {
        int done = 0;
        foreach (ref readonly var s in segments)
        {
            if (done == source.Length) break;
            long segLen = (long)s.Window.Length;
            if (skip >= segLen)
            {
                skip -= segLen;
                continue;
            }
            int take = (int)Math.Min(segLen - skip, source.Length - done);
            source.Slice(done, take).CopyTo(s.Window.Span((nuint)skip, take));
            done += take;
            skip = 0;
        }
        return done == source.Length;
    }
}
