using Microsoft.Extensions.Logging;
using Vhost.Interop;

namespace Vhost.Memory;

/// <summary>A region as the front-end describes it (VhostUserMemoryRegion).</summary>
internal readonly record struct MemoryRegionInfo(ulong GuestPhysAddr, ulong Size, ulong UserAddr, ulong MmapOffset)
{
    public ulong GuestPhysEnd => GuestPhysAddr + Size;

    public ulong UserEnd => UserAddr + Size;

    public override string ToString() =>
        $"gpa 0x{GuestPhysAddr:x} size 0x{Size:x} uva 0x{UserAddr:x} offset 0x{MmapOffset:x}";
}

/// <summary>
/// One mapped guest region. Creation checks the description and the fd before mapping, so that a
/// front-end cannot make us touch memory beyond the end of its file (SIGBUS) or wrap an address.
/// Reference-counted: the creator holds one reference (<see cref="Dispose"/> drops it) and every
/// <see cref="GuestMemory"/> generation that contains the region holds one; the last release unmaps it.
/// </summary>
internal sealed class GuestMemoryRegion : IDisposable
{
    private readonly MemoryMapping _mapping;
    private readonly SafeFd _fd;
    private int _refs = 1;

    private GuestMemoryRegion(MemoryRegionInfo info, MemoryMapping mapping, SafeFd fd)
    {
        Info = info;
        _mapping = mapping;
        _fd = fd;
        Window = mapping.Window.Slice((nuint)info.MmapOffset, (nuint)info.Size);
    }

    public MemoryRegionInfo Info { get; }

    /// <summary>The guest bytes [GuestPhysAddr, GuestPhysEnd).</summary>
    internal NativeWindow Window { get; }

    /// <summary>Raised once, from a timer thread, if the fd shrank under the mapping and a touch past its new end
    /// was answered with a zero page (<see cref="MemoryMapping.Faulted"/>).</summary>
    public Action? Faulted
    {
        get => _mapping.Faulted;
        set => _mapping.Faulted = value;
    }

    /// <summary>The fd the region was mapped from (kept open for GET_INFLIGHT/postcopy and for diagnostics).</summary>
    public SafeFd Fd => _fd;

    /// <summary>Checks the description alone: what can be refused before looking at the fd.</summary>
    public static string? Validate(in MemoryRegionInfo info)
    {
        if (info.Size == 0) return "region size is zero";
        if (info.GuestPhysAddr + info.Size < info.GuestPhysAddr) return "guest physical range wraps";
        if (info.UserAddr + info.Size < info.UserAddr) return "front-end address range wraps";
        if (info.MmapOffset + info.Size < info.MmapOffset) return "mmap offset plus size wraps";
        if (info.MmapOffset + info.Size > long.MaxValue) return "mmap offset plus size too large";
        if (info.Size > (1UL << 46)) return "region larger than 64 TiB";
        return null;
    }

    /// <summary>
    /// Validates and maps. Takes ownership of <paramref name="fd"/> on success; on failure returns null with
    /// the reason and leaves the fd to the caller.
    /// </summary>
    public static GuestMemoryRegion? TryMap(in MemoryRegionInfo info, SafeFd fd, out string? error, ILogger? logger = null)
    {
        error = Validate(info);
        if (error != null) return null;
        if (!FileDescriptors.TryStat(fd, out var st))
        {
            error = "fstat on the region's fd failed";
            return null;
        }
        if (!st.IsRegular)
        {
            // .NET has no octal format specifier ("o" throws FormatException); modes read best in octal
            error = $"region fd is not a memory file (mode 0{Convert.ToString(st.Mode, 8)})";
            return null;
        }
        ulong needed = info.MmapOffset + info.Size;
        if ((ulong)st.Size < needed)
        {
            error = $"region needs {needed} bytes of its fd but the fd has {st.Size}";
            return null;
        }
        try
        {
            var mapping = MemoryMapping.Map(fd, (nuint)needed, logger: logger);
            return new GuestMemoryRegion(info, mapping, fd);
        }
        catch (NativeException e)
        {
            error = e.Message;
            return null;
        }
    }

    /// <summary>Whether the region is unmapped (every reference released).</summary>
    public bool IsUnmapped => Volatile.Read(ref _refs) <= 0;

    internal void Acquire()
    {
        if (Interlocked.Increment(ref _refs) <= 1) throw new InvalidOperationException("region acquired after it was unmapped");
    }

    internal void Release()
    {
        if (Interlocked.Decrement(ref _refs) != 0) return;
        _mapping.Dispose();
        _fd.Dispose();
    }

    /// <summary>Drops the creator's reference; the region stays mapped while a generation holds it.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0) Release();
    }

    private int _disposed;
}
