using System.Buffers.Binary;
using Vhost.Memory;
using Vhost.Rings;

namespace Vhost.Testing.FrontEnd;

/// <summary>VHOST_USER_SET_VRING_ENABLE / GET_VRING_BASE / ... payload.</summary>
internal readonly record struct VringState(uint Index, uint Num);

/// <summary>GET_CONFIG / SET_CONFIG payload.</summary>
internal sealed record ConfigPayload(uint Offset, uint Size, uint Flags, byte[] Data);

/// <summary>GET_INFLIGHT_FD / SET_INFLIGHT_FD payload.</summary>
internal readonly record struct InflightPayload(ulong MmapSize, ulong MmapOffset, ushort NumQueues, ushort QueueSize);

/// <summary>SET_LOG_BASE payload.</summary>
internal readonly record struct LogPayload(ulong MmapSize, ulong MmapOffset);

/// <summary>IOTLB_MSG payload (struct vhost_iotlb_msg).</summary>
internal readonly record struct IotlbPayload(ulong Iova, ulong Size, ulong UserAddr, byte Perm, byte Type)
{
    public const byte PermNone = 0, PermRead = 1, PermWrite = 2, PermReadWrite = 3;
    public const byte TypeMiss = 1, TypeUpdate = 2, TypeInvalidate = 3, TypeAccessFail = 4;
}

/// <summary>
/// Builders and parsers for every front-end payload layout of the vhost-user spec. Sizes are those QEMU
/// puts in the header: C structs with natural alignment, so IOTLB and inflight carry tail padding.
/// </summary>
internal static class VhostUserPayload
{
    public const int U64Size = 8;
    public const int VringStateSize = 8;
    public const int VringAddressSize = 40;
    public const int MemoryTableHeaderSize = 8;
    public const int MemoryRegionSize = 32;
    public const int SingleRegionSize = 8 + MemoryRegionSize;
    public const int ConfigHeaderSize = 12;
    /// <summary>VHOST_USER_MAX_CONFIG_SIZE.</summary>
    public const int MaxConfigSize = 256;
    public const int InflightSize = 24;
    public const int LogSize = 16;
    public const int IotlbSize = 32;
    /// <summary>VHOST_MEMORY_BASELINE_NREGIONS: the regions one SET_MEM_TABLE can describe.</summary>
    public const int MaxMemTableRegions = 8;

    /// <summary>Bit 8 of the SET_VRING_KICK/CALL/ERR payload: no fd attached, poll instead.</summary>
    public const ulong VringNoFdFlag = 1UL << 8;
    public const ulong VringIndexMask = 0xff;

    public static byte[] U64(ulong value)
    {
        var b = new byte[U64Size];
        BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        return b;
    }

    public static byte[] VringState(uint index, uint num)
    {
        var b = new byte[VringStateSize];
        BinaryPrimitives.WriteUInt32LittleEndian(b, index);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), num);
        return b;
    }

    public static byte[] VringAddress(in VringAddress a)
    {
        var b = new byte[VringAddressSize];
        var s = b.AsSpan();
        BinaryPrimitives.WriteUInt32LittleEndian(s, a.Index);
        BinaryPrimitives.WriteUInt32LittleEndian(s[4..], a.Flags);
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], a.DescUserAddr);
        BinaryPrimitives.WriteUInt64LittleEndian(s[16..], a.UsedUserAddr);
        BinaryPrimitives.WriteUInt64LittleEndian(s[24..], a.AvailUserAddr);
        BinaryPrimitives.WriteUInt64LittleEndian(s[32..], a.LogGuestAddr);
        return b;
    }

    /// <summary>
    /// A memory table. <paramref name="claimedCount"/> overrides nregions (hostile tests); the bytes always
    /// hold exactly <paramref name="regions"/>, unless <paramref name="padToMax"/> fills all eight slots.
    /// </summary>
    public static byte[] MemoryTable(IReadOnlyList<MemoryRegionInfo> regions, uint? claimedCount = null, bool padToMax = false)
    {
        ArgumentNullException.ThrowIfNull(regions);
        int slots = padToMax ? Math.Max(MaxMemTableRegions, regions.Count) : regions.Count;
        var b = new byte[MemoryTableHeaderSize + slots * MemoryRegionSize];
        BinaryPrimitives.WriteUInt32LittleEndian(b, claimedCount ?? (uint)regions.Count);
        for (int i = 0; i < regions.Count; i++)
            WriteRegion(b.AsSpan(MemoryTableHeaderSize + i * MemoryRegionSize), regions[i]);
        return b;
    }

    /// <summary>ADD_MEM_REG / REM_MEM_REG payload: 8 bytes of padding, then one region.</summary>
    public static byte[] SingleRegion(in MemoryRegionInfo region)
    {
        var b = new byte[SingleRegionSize];
        WriteRegion(b.AsSpan(8), region);
        return b;
    }

    public static byte[] Config(uint offset, uint size, uint flags, ReadOnlySpan<byte> data)
    {
        var b = new byte[ConfigHeaderSize + data.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(b, offset);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), size);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), flags);
        data.CopyTo(b.AsSpan(ConfigHeaderSize));
        return b;
    }

    public static byte[] Config(ConfigPayload c)
    {
        ArgumentNullException.ThrowIfNull(c);
        return Config(c.Offset, c.Size, c.Flags, c.Data);
    }

    public static byte[] Inflight(in InflightPayload p)
    {
        var b = new byte[InflightSize];
        BinaryPrimitives.WriteUInt64LittleEndian(b, p.MmapSize);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), p.MmapOffset);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(16), p.NumQueues);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(18), p.QueueSize);
        return b;
    }

    public static byte[] Log(in LogPayload p)
    {
        var b = new byte[LogSize];
        BinaryPrimitives.WriteUInt64LittleEndian(b, p.MmapSize);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), p.MmapOffset);
        return b;
    }

    public static byte[] Iotlb(in IotlbPayload p)
    {
        var b = new byte[IotlbSize];
        BinaryPrimitives.WriteUInt64LittleEndian(b, p.Iova);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), p.Size);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), p.UserAddr);
        b[24] = p.Perm;
        b[25] = p.Type;
        return b;
    }

    /// <summary>SET_VRING_KICK / CALL / ERR payload: the index in bits 0-7, bit 8 when no fd travels with it.</summary>
    public static byte[] VringFile(uint index, bool noFd) =>
        U64((index & VringIndexMask) | (noFd ? VringNoFdFlag : 0));

    /// <summary>SEND_RARP payload: the MAC in the first six bytes of a u64.</summary>
    public static byte[] Mac(ReadOnlySpan<byte> mac)
    {
        if (mac.Length != 6) throw new ArgumentException("a MAC is 6 bytes", nameof(mac));
        var b = new byte[U64Size];
        mac.CopyTo(b);
        return b;
    }

    // Parsers: strict about the minimum length, lenient about extra bytes (the caller checks the size field).

    public static ulong ReadU64(ReadOnlySpan<byte> p)
    {
        Need(p, U64Size, "u64");
        return BinaryPrimitives.ReadUInt64LittleEndian(p);
    }

    public static VringState ReadVringState(ReadOnlySpan<byte> p)
    {
        Need(p, VringStateSize, "vring state");
        return new VringState(BinaryPrimitives.ReadUInt32LittleEndian(p), BinaryPrimitives.ReadUInt32LittleEndian(p[4..]));
    }

    public static VringAddress ReadVringAddress(ReadOnlySpan<byte> p)
    {
        Need(p, VringAddressSize, "vring address");
        return new VringAddress(
            BinaryPrimitives.ReadUInt32LittleEndian(p),
            BinaryPrimitives.ReadUInt32LittleEndian(p[4..]),
            BinaryPrimitives.ReadUInt64LittleEndian(p[8..]),
            BinaryPrimitives.ReadUInt64LittleEndian(p[16..]),
            BinaryPrimitives.ReadUInt64LittleEndian(p[24..]),
            BinaryPrimitives.ReadUInt64LittleEndian(p[32..]));
    }

    /// <summary>Reads nregions and as many regions as both nregions and the bytes allow.</summary>
    public static (uint Count, MemoryRegionInfo[] Regions) ReadMemoryTable(ReadOnlySpan<byte> p)
    {
        Need(p, MemoryTableHeaderSize, "memory table");
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(p);
        int present = (p.Length - MemoryTableHeaderSize) / MemoryRegionSize;
        int n = (int)Math.Min(count, (uint)present);
        var regions = new MemoryRegionInfo[n];
        for (int i = 0; i < n; i++) regions[i] = ReadRegion(p[(MemoryTableHeaderSize + i * MemoryRegionSize)..]);
        return (count, regions);
    }

    public static MemoryRegionInfo ReadSingleRegion(ReadOnlySpan<byte> p)
    {
        Need(p, SingleRegionSize, "single memory region");
        return ReadRegion(p[8..]);
    }

    public static ConfigPayload ReadConfig(ReadOnlySpan<byte> p)
    {
        Need(p, ConfigHeaderSize, "config");
        return new ConfigPayload(
            BinaryPrimitives.ReadUInt32LittleEndian(p),
            BinaryPrimitives.ReadUInt32LittleEndian(p[4..]),
            BinaryPrimitives.ReadUInt32LittleEndian(p[8..]),
            p[ConfigHeaderSize..].ToArray());
    }

    public static InflightPayload ReadInflight(ReadOnlySpan<byte> p)
    {
        Need(p, 20, "inflight");
        return new InflightPayload(
            BinaryPrimitives.ReadUInt64LittleEndian(p),
            BinaryPrimitives.ReadUInt64LittleEndian(p[8..]),
            BinaryPrimitives.ReadUInt16LittleEndian(p[16..]),
            BinaryPrimitives.ReadUInt16LittleEndian(p[18..]));
    }

    public static LogPayload ReadLog(ReadOnlySpan<byte> p)
    {
        Need(p, LogSize, "log");
        return new LogPayload(BinaryPrimitives.ReadUInt64LittleEndian(p), BinaryPrimitives.ReadUInt64LittleEndian(p[8..]));
    }

    public static IotlbPayload ReadIotlb(ReadOnlySpan<byte> p)
    {
        Need(p, 26, "iotlb");
        return new IotlbPayload(
            BinaryPrimitives.ReadUInt64LittleEndian(p),
            BinaryPrimitives.ReadUInt64LittleEndian(p[8..]),
            BinaryPrimitives.ReadUInt64LittleEndian(p[16..]),
            p[24],
            p[25]);
    }

    private static void WriteRegion(Span<byte> s, in MemoryRegionInfo r)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(s, r.GuestPhysAddr);
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], r.Size);
        BinaryPrimitives.WriteUInt64LittleEndian(s[16..], r.UserAddr);
        BinaryPrimitives.WriteUInt64LittleEndian(s[24..], r.MmapOffset);
    }

    private static MemoryRegionInfo ReadRegion(ReadOnlySpan<byte> s) => new(
        BinaryPrimitives.ReadUInt64LittleEndian(s),
        BinaryPrimitives.ReadUInt64LittleEndian(s[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(s[16..]),
        BinaryPrimitives.ReadUInt64LittleEndian(s[24..]));

    private static void Need(ReadOnlySpan<byte> p, int length, string what)
    {
        if (p.Length < length) throw new InvalidDataException($"{what} payload needs {length} bytes, got {p.Length}");
    }
}
