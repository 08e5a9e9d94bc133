using System.Runtime.CompilerServices;
using Vhost.Interop;

namespace Vhost.Net;

/// <summary>Offload requests carried with a packet (the virtio-net header, in mbuf-flag form).</summary>
[Flags]
public enum PacketOffloads : byte
{
    /// <summary>No offload requested.</summary>
    None = 0,
    /// <summary>VIRTIO_NET_HDR_F_NEEDS_CSUM: checksum from CsumStart, stored at CsumStart+CsumOffset.</summary>
    NeedsCsum = 1,
    /// <summary>VIRTIO_NET_HDR_F_DATA_VALID: the checksum was already verified.</summary>
    DataValid = 2,
}

/// <summary>Per-buffer metadata (DPDK's rte_mbuf fields).</summary>
public struct PacketMeta
{
    /// <summary>Bytes in this buffer.</summary>
    public int DataLength;
    /// <summary>Bytes in the whole chain (head only).</summary>
    public int PacketLength;
    /// <summary>Next buffer of a chained packet, or -1.</summary>
    public int Next;
    /// <summary>The header's checksum flags.</summary>
    public PacketOffloads Offloads;
    /// <summary>virtio gso_type (0 none, 1 TCPv4, 3 UDP, 4 TCPv6, | 0x80 ECN).</summary>
    public byte GsoType;
    /// <summary>Segmentation: the payload size of each segment (gso_size).</summary>
    public ushort GsoSize;
    /// <summary>Segmentation: the length of the headers repeated in each segment (hdr_len).</summary>
    public ushort HeaderLength;
    /// <summary>Where checksumming starts, from the frame's first byte (csum_start).</summary>
    public ushort CsumStart;
    /// <summary>Where the checksum goes, from <see cref="CsumStart"/> (csum_offset).</summary>
    public ushort CsumOffset;
    internal bool InUse;
}

/// <summary>A packet: a buffer of a <see cref="PacketPool"/>, possibly the head of a chain.</summary>
public readonly struct Packet(PacketPool pool, int index)
{
    /// <summary>The pool the buffer belongs to.</summary>
    public PacketPool Pool { get; } = pool;

    /// <summary>The buffer's index in its pool.</summary>
    public int Index { get; } = index;

    /// <summary>Whether this is the default packet, which has no buffer.</summary>
    public bool IsNull => Pool is null;

    /// <summary>The buffer's metadata: lengths, chaining and offloads.</summary>
    public ref PacketMeta Meta => ref Pool.MetaOf(Index);

    /// <summary>This buffer's bytes.</summary>
    public Span<byte> Data => Pool.DataOf(Index);

    /// <summary>The whole packet's length, over every buffer of its chain.</summary>
    public int Length => Pool.MetaOf(Index).PacketLength;

    /// <summary>Gives the packet and every buffer chained to it back to the pool.</summary>
    public void Free() => Pool.Free(this);
}

/// <summary>
/// Fixed-size packet buffers in native memory (DPDK's mbuf pool). A pool belongs to one thread at a time, as a
/// DPDK lcore's mempool cache does: allocation and free are a stack push/pop with no lock and no GC allocation.
/// </summary>
public sealed class PacketPool : IDisposable
{
    private readonly NativeBuffer _memory;
    // the buffer's window, kept so a packet's bytes are one multiply away on the data path rather than behind
    // NativeBuffer's disposed check; Dispose empties it, so a late access fails its bounds check
    private NativeWindow _data;
    private readonly PacketMeta[] _meta;
    private readonly int[] _free;
    private int _freeCount;

    /// <summary>A pool of <paramref name="count"/> buffers of <paramref name="dataRoom"/> bytes each, in one native allocation.</summary>
    public PacketPool(int count, int dataRoom = 2048)
    {
        if (count <= 0) throw new ArgumentOutOfRangeException(nameof(count));
        if (dataRoom < 64) throw new ArgumentOutOfRangeException(nameof(dataRoom));
        DataRoom = dataRoom;
        Count = count;
        Stride = Spread(dataRoom);
        _memory = new NativeBuffer((nuint)count * (nuint)Stride);
        _data = _memory.Window;
        _meta = new PacketMeta[count];
        _free = new int[count];
        for (int i = 0; i < count; i++) _free[i] = count - 1 - i;
        _freeCount = count;
    }

    /// <summary>The bytes each buffer holds.</summary>
    public int DataRoom { get; }

    /// <summary>Bytes from one buffer's start to the next's: the data room rounded up to an odd number of cache lines.</summary>
    public int Stride { get; }

    // Buffers an even number of lines apart put their first lines into few L1 sets: 2048 bytes apart, every
    // other buffer is 4 KiB from the last, and a burst of 32 frames shares two sets of an 8-way cache, so the
    // copy and the counting of each burst missed L1 on every frame. An odd number of lines spreads a burst
    // over as many sets as it has buffers, which is what DPDK's mempool does with its objects' size.
    private static int Spread(int dataRoom)
    {
        int lines = (dataRoom + 63) / 64;
        return (lines | 1) * 64;
    }

    /// <summary>The buffers the pool has, free or in use.</summary>
    public int Count { get; }

    /// <summary>Buffers free right now; Count - Available are in use (a leak check for tests).</summary>
    public int Available => _freeCount;

    /// <summary>Takes a free buffer with cleared metadata; false when the pool is empty.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryAllocate(out Packet packet)
    {
        if (_freeCount == 0)
        {
            packet = default;
            return false;
        }
        int i = _free[--_freeCount];
        ref var m = ref _meta[i];
        m = default;
        m.Next = -1;
        m.InUse = true;
        packet = new Packet(this, i);
        return true;
    }

    /// <summary>Frees a packet and every buffer chained to it.</summary>
    public void Free(Packet packet)
    {
        int i = packet.Index;
        while (i >= 0)
        {
            ref var m = ref _meta[i];
            if (!m.InUse) throw new InvalidOperationException($"packet buffer {i} freed twice");
            m.InUse = false;
            int next = m.Next;
            _free[_freeCount++] = i;
            i = next;
        }
    }

    /// <summary>Frees each of <paramref name="packets"/> with its chain.</summary>
    public void Free(ReadOnlySpan<Packet> packets)
    {
        foreach (var p in packets) Free(p);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ref PacketMeta MetaOf(int index) => ref _meta[index];

    /// <summary>
    /// A buffer's first eight bytes, little-endian, without making a span: the destination MAC is the low six.
    /// Every buffer has at least 64 bytes of room, so this stays inside it whatever the frame's length.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong HeadOf(int index) => _data.ReadUnaligned<ulong>((nuint)index * (nuint)Stride);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Span<byte> DataOf(int index) => _data.Span((nuint)index * (nuint)Stride, DataRoom);

    /// <summary>Makes a packet of <paramref name="frame"/>, chaining buffers when it is larger than one.</summary>
    public bool TryCreate(ReadOnlySpan<byte> frame, out Packet packet)
    {
        if (!TryAllocate(out packet)) return false;
        int head = packet.Index, prev = -1, done = 0;
        int cur = head;
        while (true)
        {
            int take = Math.Min(DataRoom, frame.Length - done);
            frame.Slice(done, take).CopyTo(DataOf(cur));
            _meta[cur].DataLength = take;
            done += take;
            if (prev >= 0) _meta[prev].Next = cur;
            if (done == frame.Length) break;
            if (!TryAllocate(out var more))
            {
                Free(packet);
                packet = default;
                return false;
            }
            prev = cur;
            cur = more.Index;
        }
        _meta[head].PacketLength = frame.Length;
        return true;
    }

    /// <summary>
    /// Copies <paramref name="source"/> (any pool's, possibly chained) into a packet of this pool, with its
    /// offload metadata (DPDK's rte_pktmbuf_copy); false, with nothing taken, when this pool has too few buffers.
    /// </summary>
    public bool TryCopy(Packet source, out Packet copy)
    {
        var src = source.Pool;
        if (!TryAllocate(out copy)) return false;
        int cur = copy.Index;
        for (int i = source.Index; ; )
        {
            int len = src.MetaOf(i).DataLength;
            if (len > DataRoom)
            {
                Free(copy);
                copy = default;
                return false;
            }
            src.DataOf(i)[..len].CopyTo(DataOf(cur));
            _meta[cur].DataLength = len;
            i = src.MetaOf(i).Next;
            if (i < 0) break;
            if (!TryAllocate(out var more))
            {
                Free(copy);
                copy = default;
                return false;
            }
            // linked at once, so a failure later frees it with the rest
            _meta[cur].Next = more.Index;
            cur = more.Index;
        }
        ref readonly var from = ref src.MetaOf(source.Index);
        ref var to = ref _meta[copy.Index];
        to.PacketLength = from.PacketLength;
        to.Offloads = from.Offloads;
        to.GsoType = from.GsoType;
        to.GsoSize = from.GsoSize;
        to.HeaderLength = from.HeaderLength;
        to.CsumStart = from.CsumStart;
        to.CsumOffset = from.CsumOffset;
        return true;
    }

    /// <summary>Copies a whole (possibly chained) packet out, for tests and slow paths.</summary>
    public int CopyOut(Packet packet, Span<byte> destination)
    {
        int n = 0;
        for (int i = packet.Index; i >= 0; i = _meta[i].Next)
        {
            int len = _meta[i].DataLength;
            DataOf(i)[..len].CopyTo(destination[n..]);
            n += len;
        }
        return n;
    }

    /// <summary>Frees the native memory; packets of the pool must not be used after it.</summary>
    public void Dispose()
    {
        _data = default;
        _memory.Dispose();
    }
}
