using System.Runtime.CompilerServices;
using Vhost.Memory;

namespace Vhost.Rings;

/// <summary>
/// The engine's part of dirty logging during a live migration: every write into guest memory made under a lease
/// (used ring entries and index, packed descriptors written back, event suppression, payload the device wrote)
/// marks its pages in a small per-queue cache of log words, and the cache goes into the shared log with atomic ORs
/// once per burst, after the writes (as DPDK's log cache does). The log is switched only with the queue quiesced.
/// </summary>
internal abstract partial class RingEngine
{
    /// <summary>Whether a fast path is instantiated for a logging ring: a constant per instantiation, so the other costs nothing.</summary>
    internal interface ILogMode
    {
        static abstract bool On { get; }
    }

    internal struct LogOn : ILogMode
    {
        public static bool On => true;
    }

    internal struct LogOff : ILogMode
    {
        public static bool On => false;
    }

    private const int LogCacheSize = 32;

    // the migration's log while the front-end logs (LOG_ALL and a log base), else null
    protected DirtyLog? _log;
    private ulong[] _logWords = [];
    private ulong[] _logBits = [];
    private int _logCount;

    // guest-physical addresses of the three ring areas, for logging writes to them
    protected ulong _descGpa;
    protected ulong _usedGpa;

    internal bool Logging => _log != null;

    /// <summary>Gives the engine the log to mark (or none); what the cache holds goes into the old log first.</summary>
    internal void SetLog(DirtyLog? log)
    {
        FlushLog();
        if (log != null && _logWords.Length == 0)
        {
            _logWords = new ulong[LogCacheSize];
            _logBits = new ulong[LogCacheSize];
        }
        _log = log;
    }

    /// <summary>Marks [gpa, gpa + length) in the cache (nothing when not logging).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void LogGpa(ulong gpa, ulong length)
    {
        if (_log != null && length != 0) LogGpaCore(gpa, length);
    }

    private void LogGpaCore(ulong gpa, ulong length)
    {
        var (first, last) = DirtyLog.PageSpan(gpa, length);
        for (ulong w = first >> 6; w <= last >> 6; w++) Cache(w, DirtyLog.WordMask(w, first, last));
    }

    private void Cache(ulong word, ulong bits)
    {
        var words = _logWords;
        for (int i = _logCount - 1; i >= 0; i--)
        {
            if (words[i] == word)
            {
                _logBits[i] |= bits;
                return;
            }
        }
        if (_logCount < words.Length)
        {
            words[_logCount] = word;
            _logBits[_logCount++] = bits;
            return;
        }
        // a full cache: this word goes straight to the log, after the data as every flush
        _log!.Or(word, bits);
    }

    /// <summary>Puts the cached bits into the log. At each burst's end, a stop, and before the log changes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void FlushLog()
    {
        if (_logCount != 0) FlushLogCore();
    }

    private void FlushLogCore()
    {
        var log = _log!;
        for (int i = 0; i < _logCount; i++) log.Or(_logWords[i], _logBits[i]);
        _logCount = 0;
    }

    /// <summary>Bytes [offset, offset + length) of the used ring (split) or the device event area (packed) were written.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected void LogUsedArea(uint offset, uint length) => LogGpa(_usedGpa + offset, length);

    /// <summary>Split: the used elements from index <paramref name="from"/> to <paramref name="to"/> and the used index were written.</summary>
    protected void LogUsedElements(ushort from, ushort to)
    {
        int count = (ushort)(to - from);
        if (count == 0) return;
        int start = from & (Size - 1);
        int part = Math.Min(count, Size - start);
        LogUsedArea((uint)(4 + 8 * start), (uint)(8 * part));
        if (part < count) LogUsedArea(4, (uint)(8 * (count - part)));
        LogUsedArea(2, 2);
    }

    /// <summary>Packed: <paramref name="count"/> descriptors from slot <paramref name="slot"/> on (wrapping) were written back.</summary>
    protected void LogDescriptors(int slot, int count)
    {
        if (count <= 0) return;
        count = Math.Min(count, Size);
        int part = Math.Min(count, Size - slot);
        LogGpa(_descGpa + (ulong)slot * 16, (ulong)part * 16);
        if (part < count) LogGpa(_descGpa, (ulong)(count - part) * 16);
    }

    /// <summary>The first <paramref name="bytes"/> of the chain's writable segments were written by the device (the caller checked <see cref="Logging"/>).</summary>
    internal void LogWritten(in DescriptorChain chain, ReadOnlySpan<BufferSegment> segments, uint bytes)
    {
        if (bytes == 0) return;
        int end = chain.SegmentStart + chain.SegmentCount;
        for (int i = chain.SegmentStart + chain.ReadableSegments; i < end && bytes > 0; i++)
        {
            ref readonly var s = ref segments[i];
            uint take = (uint)Math.Min(bytes, s.Window.Length);
            if (take == 0) continue;
            LogGpaCore(s.GuestAddress, take);
            bytes -= take;
        }
    }
}
