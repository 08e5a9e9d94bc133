namespace Vhost.Blk;

/// <summary>VIRTIO_BLK_F_* feature bit numbers (virtio spec 5.2.3).</summary>
public static class BlkFeature
{
    public const int SizeMax = 1;
    public const int SegMax = 2;
    public const int Geometry = 4;
    public const int ReadOnly = 5;
    public const int BlkSize = 6;
    public const int Flush = 9;
    public const int Topology = 10;
    public const int ConfigWce = 11;
    public const int Mq = 12;
    public const int Discard = 13;
    public const int WriteZeroes = 14;
}

/// <summary>VIRTIO_BLK_T_* request types.</summary>
public enum BlkRequestType : uint
{
    In = 0,
    Out = 1,
    Flush = 4,
    GetId = 8,
    GetLifetime = 10,
    Discard = 11,
    WriteZeroes = 13,
    SecureErase = 14,
}

/// <summary>VIRTIO_BLK_S_* status byte values.</summary>
public enum BlkStatus : byte
{
    Ok = 0,
    IoErr = 1,
    Unsupp = 2,
}

/// <summary>Offsets in struct virtio_blk_config (little-endian, packed as the spec lays it out).</summary>
internal static class BlkConfigLayout
{
    public const int Capacity = 0;
    public const int SizeMax = 8;
    public const int SegMax = 12;
    public const int GeometryCylinders = 16;
    public const int GeometryHeads = 18;
    public const int GeometrySectors = 19;
    public const int BlkSize = 20;
    public const int PhysicalBlockExp = 24;
    public const int AlignmentOffset = 25;
    public const int MinIoSize = 26;
    public const int OptIoSize = 28;
    public const int Writeback = 32;
    public const int NumQueues = 34;
    public const int MaxDiscardSectors = 36;
    public const int MaxDiscardSeg = 40;
    public const int DiscardSectorAlignment = 44;
    public const int MaxWriteZeroesSectors = 48;
    public const int MaxWriteZeroesSeg = 52;
    public const int WriteZeroesMayUnmap = 56;
    /// <summary>Through write_zeroes_may_unmap and its padding; secure erase fields are not offered.</summary>
    public const int Size = 60;
}

internal static class BlkWire
{
    public const int SectorShift = 9;
    public const int SectorSize = 512;
    public const int HeaderSize = 16;
    public const int IdBytes = 20;
    /// <summary>struct virtio_blk_discard_write_zeroes: u64 sector, u32 num_sectors, u32 flags.</summary>
    public const int RangeSize = 16;
    public const uint RangeFlagUnmap = 1;
    public const int EInval = 22;

    /// <summary>[offset, offset + length) lies inside a disk of <paramref name="capacity"/> bytes (no overflow).</summary>
    public static bool InRange(long offset, long length, long capacity) =>
        offset >= 0 && length >= 0 && offset <= capacity && length <= capacity - offset;
}
