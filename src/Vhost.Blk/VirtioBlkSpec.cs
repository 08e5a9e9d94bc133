namespace Vhost.Blk;

/// <summary>VIRTIO_BLK_F_* feature bit numbers (virtio spec 5.2.3).</summary>
public static class BlkFeature
{
    /// <summary>VIRTIO_BLK_F_SIZE_MAX: size_max in the config space bounds a segment.</summary>
    public const int SizeMax = 1;
    /// <summary>VIRTIO_BLK_F_SEG_MAX: seg_max in the config space bounds the segments of a request.</summary>
    public const int SegMax = 2;
    /// <summary>VIRTIO_BLK_F_GEOMETRY: the config space has a legacy geometry.</summary>
    public const int Geometry = 4;
    /// <summary>VIRTIO_BLK_F_RO: the disk is read-only.</summary>
    public const int ReadOnly = 5;
    /// <summary>VIRTIO_BLK_F_BLK_SIZE: blk_size in the config space is the logical block size.</summary>
    public const int BlkSize = 6;
    /// <summary>VIRTIO_BLK_F_FLUSH: the FLUSH request exists.</summary>
    public const int Flush = 9;
    /// <summary>VIRTIO_BLK_F_TOPOLOGY: the config space has alignment and I/O size hints.</summary>
    public const int Topology = 10;
    /// <summary>VIRTIO_BLK_F_CONFIG_WCE: the driver may switch the write cache mode (writeback).</summary>
    public const int ConfigWce = 11;
    /// <summary>VIRTIO_BLK_F_MQ: more than one request queue (num_queues).</summary>
    public const int Mq = 12;
    /// <summary>VIRTIO_BLK_F_DISCARD: the DISCARD request exists.</summary>
    public const int Discard = 13;
    /// <summary>VIRTIO_BLK_F_WRITE_ZEROES: the WRITE_ZEROES request exists.</summary>
    public const int WriteZeroes = 14;
}

/// <summary>VIRTIO_BLK_T_* request types.</summary>
public enum BlkRequestType : uint
{
    /// <summary>Read sectors into the driver's buffers.</summary>
    In = 0,
    /// <summary>Write sectors from the driver's buffers.</summary>
    Out = 1,
    /// <summary>Make every completed write durable.</summary>
    Flush = 4,
    /// <summary>Return the device's serial (up to 20 bytes).</summary>
    GetId = 8,
    /// <summary>Return wear estimates of flash storage (not served).</summary>
    GetLifetime = 10,
    /// <summary>The listed ranges' content no longer matters.</summary>
    Discard = 11,
    /// <summary>The listed ranges read as zeros afterwards.</summary>
    WriteZeroes = 13,
    /// <summary>Erase the listed ranges beyond recovery (not served).</summary>
    SecureErase = 14,
}

/// <summary>VIRTIO_BLK_S_* status byte values.</summary>
public enum BlkStatus : byte
{
    /// <summary>The request succeeded.</summary>
    Ok = 0,
    /// <summary>The request failed, or broke a rule of the device.</summary>
    IoErr = 1,
    /// <summary>The device does not serve this request type.</summary>
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
