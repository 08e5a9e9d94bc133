using System.Runtime.CompilerServices;
using Vhost.Interop;

namespace Vhost.Memory;

/// <summary>
/// One generation of guest memory: an immutable set of mapped regions and the one bounds-checked path from a
/// guest-physical or front-end virtual address to host memory. A memory-table change builds a new generation
/// and publishes it while the rings are quiesced; the old one is retired, and its regions are unmapped only
/// when the last holder (the device, or off-thread work such as a blk request in flight) releases it.
/// Reference-counted like vm-memory's GuestMemoryAtomic: the publisher holds the first reference.
/// </summary>
public sealed class GuestMemory
{
    private readonly GuestMemoryRegion[] _regions;
    // 1 for the publisher; 0 once retired and released by every holder; Empty is never released
    private RefCount _refs = new();
    private readonly bool _immortal;
    // the translation loop reads these flat copies: no region object, property or record copy per lookup
    private readonly Span3[] _flat;

    private readonly record struct Span3(ulong Gpa, ulong Size, NativeWindow Window);

    /// <summary>The memory table before the front-end sends one: no regions, every translation fails.</summary>
    public static GuestMemory Empty { get; } = new([], immortal: true);

    private GuestMemory(GuestMemoryRegion[] regions, bool immortal = false)
    {
        _regions = regions;
        _immortal = immortal;
        _flat = [.. regions.Select(r => new Span3(r.Info.GuestPhysAddr, r.Info.Size, r.Window))];
        foreach (var r in regions) r.Acquire();
    }

    /// <summary>Holders besides the publisher (0 when only the publisher holds it); for tests and diagnostics.</summary>
    internal int Holders => Math.Max(0, _refs.Count - 1);

    /// <summary>Whether every holder has released it (its regions may be unmapped).</summary>
    internal bool IsRetired => !_immortal && _refs.Count == 0;

    /// <summary>Takes a reference that keeps every region of this generation mapped until <see cref="Release"/>;
    /// false when the generation is already gone.</summary>
    public bool TryAcquire()
    {
        return _immortal || _refs.TryAcquire();
    }

    /// <summary>Drops a reference; the last one releases the regions (each unmapped when no generation holds it).</summary>
    public void Release()
    {
        if (_immortal || !_refs.Release("guest memory generation")) return;
        foreach (var region in _regions) region.Release();
    }

    internal IReadOnlyList<GuestMemoryRegion> Regions => _regions;

    /// <summary>How many memory regions the table has.</summary>
    public int Count => _regions.Length;

    /// <summary>Builds a table, refusing regions that overlap in either address space.</summary>
    internal static GuestMemory? TryCreate(IEnumerable<GuestMemoryRegion> regions, out string? error)
    {
        var list = regions.ToArray();
        for (int i = 0; i < list.Length; i++)
        {
            for (int j = i + 1; j < list.Length; j++)
            {
                var a = list[i].Info;
                var b = list[j].Info;
                if (a.GuestPhysAddr < b.GuestPhysEnd && b.GuestPhysAddr < a.GuestPhysEnd)
                {
                    error = $"regions overlap in guest physical space: [{a}] and [{b}]";
                    return null;
                }
                if (a.UserAddr < b.UserEnd && b.UserAddr < a.UserEnd)
                {
                    error = $"regions overlap in front-end address space: [{a}] and [{b}]";
                    return null;
                }
            }
        }
        error = null;
        return new GuestMemory(list);
    }

    /// <summary>Translates [gpa, gpa+length) when it lies inside one region.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryTranslate(ulong gpa, ulong length, out NativeWindow window)
    {
        var regions = _flat;
        for (int i = 0; i < regions.Length; i++)
        {
            ref readonly var r = ref regions[i];
            ulong off = gpa - r.Gpa;
            if (gpa >= r.Gpa && off < r.Size && length <= r.Size - off)
            {
                window = r.Window.Slice((nuint)off, (nuint)length);
                return true;
            }
        }
        window = default;
        return false;
    }

    /// <summary>Translates a front-end virtual address range (the ring addresses of SET_VRING_ADDR).</summary>
    public bool TryTranslateUserAddress(ulong uva, ulong length, out NativeWindow window) =>
        TryTranslateUserAddress(uva, length, out window, out _);

    /// <summary>Translates a front-end virtual address range inside one region, and gives its guest-physical address
    /// (what the dirty log marks): the second step of an IOVA's translation under a vIOMMU.</summary>
    public bool TryTranslateUserAddress(ulong uva, ulong length, out NativeWindow window, out ulong gpa)
    {
        foreach (var r in _regions)
        {
            ulong off = uva - r.Info.UserAddr;
            if (uva >= r.Info.UserAddr && off < r.Info.Size && length <= r.Info.Size - off)
            {
                window = r.Window.Slice((nuint)off, (nuint)length);
                gpa = r.Info.GuestPhysAddr + off;
                return true;
            }
        }
        window = default;
        gpa = 0;
        return false;
    }

    /// <summary>Front-end virtual address to guest physical, for the dirty log of ring writes.</summary>
    public bool TryUserToGuestPhys(ulong uva, out ulong gpa)
    {
        foreach (var r in _regions)
        {
            if (uva >= r.Info.UserAddr && uva - r.Info.UserAddr < r.Info.Size)
            {
                gpa = r.Info.GuestPhysAddr + (uva - r.Info.UserAddr);
                return true;
            }
        }
        gpa = 0;
        return false;
    }

    /// <summary>
    /// Translates a buffer that may cross from one region into an adjacent one. Writes the pieces into
    /// <paramref name="pieces"/> and returns how many, or -1 when part of the range is unmapped or there
    /// are more pieces than room.
    /// </summary>
    public int TranslateSplit(ulong gpa, ulong length, Span<NativeWindow> pieces)
    {
        int n = 0;
        if (length == 0)
        {
            if (pieces.Length == 0 || !TryTranslate(gpa, 0, out var w)) return -1;
            pieces[0] = w;
            return 1;
        }
        while (length > 0)
        {
            if (n == pieces.Length) return -1;
            GuestMemoryRegion? hit = null;
            foreach (var r in _regions)
            {
                if (gpa >= r.Info.GuestPhysAddr && gpa - r.Info.GuestPhysAddr < r.Info.Size) { hit = r; break; }
            }
            if (hit == null) return -1;
            ulong off = gpa - hit.Info.GuestPhysAddr;
            ulong take = Math.Min(length, hit.Info.Size - off);
            pieces[n++] = hit.Window.Slice((nuint)off, (nuint)take);
            gpa += take;
            length -= take;
        }
        return n;
    }
}
