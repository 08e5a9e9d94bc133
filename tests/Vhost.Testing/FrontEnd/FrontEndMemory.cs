using Vhost.Interop;
using Vhost.Memory;

namespace Vhost.Testing.FrontEnd;

/// <summary>
/// One region of the test guest's memory: what is described to the back-end (<see cref="Info"/>), the fd
/// sent with it, and, for honest regions, the local mapping through which the test reads and writes.
/// Hostile regions (short fd, pipe, socket, arbitrary fd) are not mapped locally.
/// </summary>
internal sealed class FrontEndRegion : IDisposable
{
    private readonly MemoryMapping? _mapping;

    internal FrontEndRegion(MemoryRegionInfo info, SafeFd fd, MemoryMapping? mapping)
    {
        Info = info;
        Fd = fd;
        _mapping = mapping;
    }

    public MemoryRegionInfo Info { get; }

    public ulong GuestPhysAddr => Info.GuestPhysAddr;

    public ulong Size => Info.Size;

    public ulong UserAddr => Info.UserAddr;

    public ulong GuestPhysEnd => Info.GuestPhysEnd;

    /// <summary>The fd sent in SET_MEM_TABLE / ADD_MEM_REG; owned by the region.</summary>
    public SafeFd Fd { get; }

    public bool IsMapped => _mapping != null;

    /// <summary>The region's guest bytes [GuestPhysAddr, GuestPhysEnd) as the test sees them.</summary>
    public NativeWindow Window => _mapping is null
        ? throw new InvalidOperationException($"region [{Info}] has no local mapping (hostile region)")
        : _mapping.Window.Slice((nuint)Info.MmapOffset, (nuint)Info.Size);

    /// <summary>Bump-allocator cursor: offset of the first free byte.</summary>
    internal ulong Used { get; set; }

    public bool Contains(ulong gpa, ulong length) =>
        gpa >= Info.GuestPhysAddr && gpa - Info.GuestPhysAddr <= Info.Size && length <= Info.Size - (gpa - Info.GuestPhysAddr);

    public void Dispose()
    {
        _mapping?.Dispose();
        Fd.Dispose();
    }
}

/// <summary>
/// Guest memory owned by the test front-end: memfd regions at chosen guest-physical addresses, each also
/// given a front-end virtual address (by default GPA + <see cref="DefaultUvaOffset"/>, so the back-end's
/// GPA and UVA translations cannot be confused), mapped locally, with a bump allocator for rings and buffers.
/// </summary>
internal sealed class FrontEndMemory : IDisposable
{
    /// <summary>Where the pretend QEMU process has guest RAM mapped, relative to guest-physical 0.</summary>
    public const ulong DefaultUvaOffset = 0x7f00_0000_0000;

    private readonly List<FrontEndRegion> _regions = [];
    private int _nameCounter;

    public FrontEndMemory(ulong uvaOffset = DefaultUvaOffset) => UvaOffset = uvaOffset;

    /// <summary>Added to a GPA to get the UVA of regions added without an explicit UVA.</summary>
    public ulong UvaOffset { get; }

    public IReadOnlyList<FrontEndRegion> Regions => _regions;

    /// <summary>Memory of one region at <paramref name="gpa"/>.</summary>
    public static FrontEndMemory Create(ulong size, ulong gpa = 0)
    {
        var m = new FrontEndMemory();
        m.AddRegion(gpa, size);
        return m;
    }

    /// <summary>
    /// Adds an honest region: a memfd of <paramref name="mmapOffset"/> + <paramref name="size"/> bytes whose
    /// guest bytes start at <paramref name="mmapOffset"/> (a non-zero offset exercises the back-end's
    /// mmap_offset handling). Overlaps with other regions are not prevented; tests may want them.
    /// </summary>
    public FrontEndRegion AddRegion(ulong gpa, ulong size, ulong mmapOffset = 0, ulong? uva = null)
    {
        if (size == 0) throw new ArgumentOutOfRangeException(nameof(size), "use AddRegionWithFd for zero-sized regions");
        if (gpa + size < gpa) throw new ArgumentOutOfRangeException(nameof(size), "guest range wraps");
        ulong fileSize = checked(mmapOffset + size);
        var info = new MemoryRegionInfo(gpa, size, uva ?? checked(gpa + UvaOffset), mmapOffset);
        var fd = FileDescriptors.CreateMemFd(NextName(), checked((long)fileSize));
        MemoryMapping mapping;
        try
        {
            mapping = MemoryMapping.Map(fd, (nuint)fileSize);
        }
        catch
        {
            fd.Dispose();
            throw;
        }
        return Add(new FrontEndRegion(info, fd, mapping));
    }

    /// <summary>A region whose memfd holds only <paramref name="actualFdSize"/> bytes but claims mmapOffset + size.</summary>
    public FrontEndRegion AddShortRegion(ulong gpa, ulong claimedSize, long actualFdSize, ulong mmapOffset = 0, ulong? uva = null)
    {
        var fd = FileDescriptors.CreateMemFd(NextName(), actualFdSize);
        return Add(new FrontEndRegion(new MemoryRegionInfo(gpa, claimedSize, uva ?? unchecked(gpa + UvaOffset), mmapOffset), fd, null));
    }

    /// <summary>A region backed by a pipe's read end instead of a memory file.</summary>
    public FrontEndRegion AddPipeRegion(ulong gpa, ulong size)
    {
        var (read, write) = FileDescriptors.Pipe();
        write.Dispose();
        return Add(new FrontEndRegion(new MemoryRegionInfo(gpa, size, unchecked(gpa + UvaOffset), 0), read, null));
    }

    /// <summary>A region backed by a Unix socket instead of a memory file.</summary>
    public FrontEndRegion AddSocketRegion(ulong gpa, ulong size)
    {
        var (a, b) = UnixSocket.Pair();
        using (a)
        using (b)
        {
            var fd = FileDescriptors.Duplicate(a.Handle);
            return Add(new FrontEndRegion(new MemoryRegionInfo(gpa, size, unchecked(gpa + UvaOffset), 0), fd, null));
        }
    }

    /// <summary>Any description with any fd (ownership passes to the region); nothing is checked or mapped.</summary>
    public FrontEndRegion AddRegionWithFd(in MemoryRegionInfo info, SafeFd fd)
    {
        ArgumentNullException.ThrowIfNull(fd);
        return Add(new FrontEndRegion(info, fd, null));
    }

    /// <summary>Forgets and disposes a region (after REM_MEM_REG, say). The back-end keeps its own fd.</summary>
    public bool Remove(FrontEndRegion region)
    {
        ArgumentNullException.ThrowIfNull(region);
        if (!_regions.Remove(region)) return false;
        region.Dispose();
        return true;
    }

    /// <summary>
    /// Reserves <paramref name="size"/> bytes aligned to <paramref name="align"/> (a power of two) in the first
    /// mapped region with room, and returns the GPA. Memory starts zeroed and is never reused.
    /// </summary>
    public ulong Allocate(ulong size, ulong align = 8)
    {
        if (align == 0 || (align & (align - 1)) != 0) throw new ArgumentOutOfRangeException(nameof(align), "alignment must be a power of two");
        foreach (var r in _regions)
        {
            if (!r.IsMapped) continue;
            ulong start = AlignUp(r.GuestPhysAddr + r.Used, align);
            ulong offset = start - r.GuestPhysAddr;
            if (offset <= r.Size && size <= r.Size - offset)
            {
                r.Used = offset + size;
                return start;
            }
        }
        throw new InvalidOperationException($"no mapped region has {size} free bytes aligned to {align}");
    }

    /// <summary>The region an address falls in (first match); null if none.</summary>
    public FrontEndRegion? RegionOf(ulong gpa, ulong length = 1)
    {
        foreach (var r in _regions) if (r.Contains(gpa, length)) return r;
        return null;
    }

    /// <summary>A window on [gpa, gpa + length), which must lie within one mapped region.</summary>
    public NativeWindow Window(ulong gpa, ulong length)
    {
        foreach (var r in _regions)
        {
            if (r.IsMapped && r.Contains(gpa, length)) return r.Window.Slice((nuint)(gpa - r.GuestPhysAddr), (nuint)length);
        }
        throw new ArgumentOutOfRangeException(nameof(gpa), $"[0x{gpa:x}, +0x{length:x}) is not inside one mapped region");
    }

    public Span<byte> Span(ulong gpa, int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        return Window(gpa, (ulong)length).AsSpan();
    }

    /// <summary>The front-end virtual address of a guest-physical address (what SET_VRING_ADDR carries).</summary>
    public ulong Uva(ulong gpa)
    {
        // Prefer the region holding the byte at gpa; fall back to one ending exactly there.
        var r = RegionOf(gpa, 1) ?? RegionOf(gpa, 0) ?? throw new ArgumentOutOfRangeException(nameof(gpa), $"0x{gpa:x} is in no region");
        return r.UserAddr + (gpa - r.GuestPhysAddr);
    }

    /// <summary>The guest-physical address of a front-end virtual address.</summary>
    public ulong Gpa(ulong uva)
    {
        foreach (var r in _regions)
        {
            if (uva >= r.UserAddr && uva - r.UserAddr < r.Size) return r.GuestPhysAddr + (uva - r.UserAddr);
        }
        foreach (var r in _regions)
        {
            if (uva >= r.UserAddr && uva - r.UserAddr == r.Size) return r.GuestPhysEnd;
        }
        throw new ArgumentOutOfRangeException(nameof(uva), $"0x{uva:x} is in no region");
    }

    /// <summary>Every region's description and fd, in order, as SET_MEM_TABLE wants them.</summary>
    public (MemoryRegionInfo[] Infos, SafeFd[] Fds) Describe() =>
        (_regions.Select(r => r.Info).ToArray(), _regions.Select(r => r.Fd).ToArray());

    public void Dispose()
    {
        foreach (var r in _regions) r.Dispose();
        _regions.Clear();
    }

    private FrontEndRegion Add(FrontEndRegion r)
    {
        _regions.Add(r);
        return r;
    }

    private string NextName() => $"vhost-test-guest-{_nameCounter++}";

    private static ulong AlignUp(ulong v, ulong align) => checked(v + align - 1) & ~(align - 1);
}
