using Vhost.Interop;
using Vhost.Memory;
using Vhost.Protocol;
using Vhost.Rings;

namespace Vhost.Fuzz;

/// <summary>
/// One ring in a 64 KiB guest memory at GPA 0x10000 (UVA = GPA), mapped once per process and cleared per
/// input, as the chains and blk targets read it. Input layout: a config byte (bit 0 packed, bits 1-3 size
/// 2..256, bit 4 indirect, bit 5 event idx, bit 6 a 4-entry segment array), a u16 base, the descriptor table,
/// the avail ring (split) or driver event area (packed), then the memory after the rings (0x17000 on).
/// </summary>
internal static class FuzzRing
{
    public const ulong Base = 0x10000;
    public const int MemSize = 64 * 1024;
    public const ulong Desc = Base, Avail = Base + 0x5000, Used = Avail + 0x1000;
    /// <summary>Where the input's tail lands: indirect tables and buffers.</summary>
    public const ulong Rest = Used + 0x1000;

    private static GuestMemory? _memory;
    private static NativeWindow _all;

    public static Virtqueue? Build(ref Program.Reader r, out int size, out byte cfg)
    {
        if (_memory == null)
        {
            var fd = FileDescriptors.CreateMemFd("fuzz-guest", MemSize);
            var region = GuestMemoryRegion.TryMap(new MemoryRegionInfo(Base, MemSize, Base, 0), fd, out var error)
                ?? throw new InvalidOperationException(error);
            _memory = GuestMemory.TryCreate([region], out _)!;
            _all = region.Window;
        }
        _all.AsSpan().Clear();
        cfg = r.U8();
        bool packed = (cfg & 1) != 0;
        size = 1 << (1 + (cfg >> 1 & 7)); // 2 .. 256
        ulong features = (packed ? VirtioFeature.Bit(VirtioFeature.RingPacked) : 0)
            | ((cfg & 0x10) != 0 ? VirtioFeature.Bit(VirtioFeature.RingIndirectDesc) : 0)
            | ((cfg & 0x20) != 0 ? VirtioFeature.Bit(VirtioFeature.RingEventIdx) : 0);
        uint baseIdx = r.U16();
        // ring contents straight from the input
        r.Take(16 * size).CopyTo(_all.Span(0, 16 * size));
        var a = _all.Span((nuint)(Avail - Base), packed ? 4 : 6 + 2 * size);
        r.Take(a.Length).CopyTo(a);
        var rest = _all.Span((nuint)(Rest - Base), MemSize - (int)(Rest - Base));
        r.Take(rest.Length).CopyTo(rest);
        return RingAccess.StartStandalone(_memory, features, size, packed ? baseIdx & 0xffff : baseIdx, Desc, Avail, Used);
    }
}
