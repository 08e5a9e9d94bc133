using System.Buffers.Binary;

namespace Vhost.Protocol;

/// <summary>The 12-byte vhost-user header.</summary>
internal readonly record struct MessageHeader(uint Request, uint Flags, uint Size)
{
    public const int Length = 12;
    public const uint VersionMask = 0x3;
    public const uint Version = 0x1;
    public const uint ReplyFlag = 0x4;
    public const uint NeedReplyFlag = 0x8;
    /// <summary>Largest payload we accept; the biggest legal one (a config message) is far below.</summary>
    public const int MaxPayload = 4096;

    public bool NeedReply => (Flags & NeedReplyFlag) != 0;

    public static MessageHeader Read(ReadOnlySpan<byte> b) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(b),
        BinaryPrimitives.ReadUInt32LittleEndian(b[4..]),
        BinaryPrimitives.ReadUInt32LittleEndian(b[8..]));

    public void Write(Span<byte> b)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(b, Request);
        BinaryPrimitives.WriteUInt32LittleEndian(b[4..], Flags);
        BinaryPrimitives.WriteUInt32LittleEndian(b[8..], Size);
    }
}

/// <summary>Payload layouts of the vhost-user spec, little-endian.</summary>
internal static class Payload
{
    public const int U64 = 8;
    public const int VringState = 8;
    public const int VringAddress = 40;
    public const int MemoryRegion = 32;
    public const int MemoryTableHeader = 8;
    public const int MaxMemoryTableRegions = 8;
    public const int SingleMemoryRegion = 8 + MemoryRegion;
    public const int ConfigHeader = 12;
    public const int MaxConfigSize = 256;
    /// <summary>struct VhostUserInflight: u64, u64, u16, u16 and 4 bytes of tail padding (QEMU sends and expects 24).</summary>
    public const int Inflight = 24;
    public const int Log = 16;
    public const int Iotlb = 8 + 8 + 8 + 1 + 1;
    /// <summary>struct vhost_iotlb_msg as QEMU and DPDK size it (tail padding to 8 bytes): what a miss carries.</summary>
    public const int IotlbPadded = 32;

    /// <summary>In SET_VRING_KICK/CALL/ERR: the front-end sends no fd.</summary>
    public const ulong VringNoFdFlag = 1UL << 8;
    public const ulong VringIndexMask = 0xff;

    public static ulong ReadU64(ReadOnlySpan<byte> p) => BinaryPrimitives.ReadUInt64LittleEndian(p);

    public static (uint Index, uint Num) ReadVringState(ReadOnlySpan<byte> p) =>
        (BinaryPrimitives.ReadUInt32LittleEndian(p), BinaryPrimitives.ReadUInt32LittleEndian(p[4..]));

    public static Memory.MemoryRegionInfo ReadRegion(ReadOnlySpan<byte> p) => new(
        BinaryPrimitives.ReadUInt64LittleEndian(p),
        BinaryPrimitives.ReadUInt64LittleEndian(p[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(p[16..]),
        BinaryPrimitives.ReadUInt64LittleEndian(p[24..]));

    public static Rings.VringAddress ReadVringAddress(ReadOnlySpan<byte> p) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(p),
        BinaryPrimitives.ReadUInt32LittleEndian(p[4..]),
        BinaryPrimitives.ReadUInt64LittleEndian(p[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(p[16..]),
        BinaryPrimitives.ReadUInt64LittleEndian(p[24..]),
        BinaryPrimitives.ReadUInt64LittleEndian(p[32..]));
}
