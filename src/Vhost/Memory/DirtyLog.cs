using Microsoft.Extensions.Logging;
using Vhost.Interop;

namespace Vhost.Memory;

/// <summary>
/// The dirty-page log of a live migration (SET_LOG_BASE): a bitmap in memory the front-end shares, one bit per
/// 4 KiB guest-physical page, bit <c>p % 64</c> of little-endian 64-bit word <c>p / 64</c>. The front-end reads
/// and clears words (an atomic exchange) while we set bits, so every bit is set with an atomic OR, after the
/// data it stands for. Reference-counted like <see cref="GuestMemory"/>: the device holds the first reference and
/// a replaced log is unmapped only when the last writer outside a burst (<see cref="Device.VhostDevice.LogWrite"/>)
/// lets go; bursts never need a reference, because the log a queue uses is switched with the queue quiesced.
/// </summary>
internal sealed class DirtyLog
{
    public const int PageShift = 12;

    /// <summary>The largest log accepted: one bit per page of 2^47 bytes (128 TiB) of guest memory.</summary>
    public const ulong MaxSize = 1UL << 32;

    private readonly MemoryMapping _mapping;
    private readonly NativeWindow _bits;
    private readonly ulong _words;
    private RefCount _refs = new();
    private long _pastEnd;

    private DirtyLog(MemoryMapping mapping, ulong size, ulong offset)
    {
        _mapping = mapping;
        Size = size;
        Offset = offset;
        _bits = mapping.Window.Slice((nuint)offset, (nuint)size);
        _words = size / 8;
    }

    /// <summary>Bytes of bitmap (the message's mmap_size).</summary>
    public ulong Size { get; }

    /// <summary>Where the bitmap starts in the fd (the message's mmap_offset).</summary>
    public ulong Offset { get; }

    /// <summary>Pages the log has a bit for.</summary>
    public ulong Pages => _words * 64;

    /// <summary>Writes whose pages lie past the end of the log: never made, only counted.</summary>
    public long WritesPastEnd => Interlocked.Read(ref _pastEnd);

    /// <summary>Raised once, from a timer thread, if the fd shrank under the mapping (bits set there are lost).</summary>
    public Action? Faulted
    {
        get => _mapping.Faulted;
        set => _mapping.Faulted = value;
    }

    /// <summary>Checks what SET_LOG_BASE says and maps it; on failure returns null with the reason and leaves the fd to the caller.</summary>
    public static DirtyLog? TryMap(SafeFd fd, ulong size, ulong offset, out string? error, ILogger? logger = null)
    {
        error = Validate(size, offset);
        if (error != null) return null;
        if (!FileDescriptors.TryStat(fd, out var st))
        {
            error = "fstat on the log fd failed";
            return null;
        }
        if (!st.IsRegular)
        {
            error = $"log fd is not a memory file (mode 0{Convert.ToString(st.Mode, 8)})";
            return null;
        }
        if ((ulong)st.Size < offset + size)
        {
            error = $"log of {size} bytes at offset {offset} needs {offset + size} bytes of its fd but the fd has {st.Size}";
            return null;
        }
        try
        {
            var mapping = MemoryMapping.Map(fd, (nuint)(offset + size), logger: logger);
            return new DirtyLog(mapping, size, offset);
        }
        catch (NativeException e)
        {
            error = e.Message;
            return null;
        }
    }

    /// <summary>What is wrong with a log of <paramref name="size"/> bytes at <paramref name="offset"/>, before looking at the fd.</summary>
    public static string? Validate(ulong size, ulong offset)
    {
        if (size == 0) return "log size is zero";
        // whole words, each aligned, or the atomic OR would split across them
        if (size % 8 != 0) return $"log size {size} is not a whole number of 64-bit words";
        if (offset % 8 != 0) return $"log offset {offset} is not 8-byte aligned";
        if (size > MaxSize) return $"log size {size} above {MaxSize} (128 TiB of guest memory)";
        if (offset > long.MaxValue - size) return $"log offset {offset} plus size {size} overflows";
        return null;
    }

    /// <summary>ORs <paramref name="bits"/> into word <paramref name="word"/> (release: everything written before is visible first).</summary>
    internal void Or(ulong word, ulong bits)
    {
        if (word >= _words)
        {
            Interlocked.Increment(ref _pastEnd);
            return;
        }
        Interlocked.Or(ref _bits.Ref<ulong>((nuint)(word * 8)), bits);
    }

    /// <summary>The first and last page of [gpa, gpa + length) (length not 0), the end clamped at the top of the address space.</summary>
    internal static (ulong First, ulong Last) PageSpan(ulong gpa, ulong length) =>
        (gpa >> PageShift, (gpa > ulong.MaxValue - (length - 1) ? ulong.MaxValue : gpa + (length - 1)) >> PageShift);

    /// <summary>Marks every page of [gpa, gpa + length) dirty, straight into the log (no cache).</summary>
    public void LogRange(ulong gpa, ulong length)
    {
        if (length == 0) return;
        var (first, last) = PageSpan(gpa, length);
        for (ulong w = first >> 6; w <= last >> 6; w++)
        {
            Or(w, WordMask(w, first, last));
            if (w >= _words) return; // counted once; the rest lies past the end too
        }
    }

    /// <summary>The bits of word <paramref name="word"/> that pages [first, last] cover.</summary>
    internal static ulong WordMask(ulong word, ulong first, ulong last)
    {
        ulong lo = word << 6, hi = lo + 63;
        int from = first > lo ? (int)(first - lo) : 0;
        int to = last < hi ? (int)(last - lo) : 63;
        ulong upTo = to == 63 ? ulong.MaxValue : (1UL << (to + 1)) - 1;
        return upTo & ~((1UL << from) - 1);
    }

    /// <summary>Whether page <paramref name="page"/>'s bit is set (tests and diagnostics).</summary>
    public bool IsDirty(ulong page) =>
        page < Pages && (Volatile.Read(ref _bits.Ref<ulong>((nuint)(page / 64 * 8))) & (1UL << (int)(page % 64))) != 0;

    /// <summary>Takes a reference that keeps the log mapped until <see cref="Release"/>; false once it is gone.</summary>
    public bool TryAcquire() => _refs.TryAcquire();

    /// <summary>Drops a reference; the last one unmaps the log.</summary>
    public void Release()
    {
        if (_refs.Release("dirty log")) _mapping.Dispose();
    }

    /// <summary>Whether the log is unmapped (every reference released).</summary>
    public bool IsUnmapped => _refs.Count <= 0;
}
