using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using Vhost.Interop;

namespace Vhost.Rings;

/// <summary>
/// In-flight tracking for split rings (the shared part: RingEngine.Inflight.cs), in the per-queue layout of the
/// vhost-user spec: a 16-byte header (u64 features, u16 version, u16 desc_num, u16 last_batch_head,
/// u16 used_idx) and one 16-byte entry per descriptor (u8 inflight, 5 pad, u16 next, u64 counter).
/// The area outlives this process (the front-end keeps its fd), so after a crash the next back-end sees
/// which heads were popped and not completed, and pops them again before anything new.
/// </summary>
internal sealed partial class SplitRing
{
    private const int InflightHeader = 16;
    private const int InflightEntry = 16;

    /// <summary>At start: repair the last completion if it was cut short, then queue every head still in flight, oldest first.</summary>
    protected override void RecoverInflightCore()
    {
        if (_inflightQueueSize < Size || _inflightRegion.Length < (nuint)(InflightHeader + InflightEntry * Size))
        {
            _logger.LogWarning("queue {Queue}: in-flight area for {Entries} descriptors cannot cover a ring of {Size}; not tracking", Index, _inflightQueueSize, Size);
            return;
        }
        var r = _inflightRegion;
        ushort version = r.Ref<ushort>(8);
        ushort descNum = r.Ref<ushort>(10);
        if (version == 0 || descNum != Size)
        {
            // a fresh area (or one from a ring of another size, which cannot describe this one)
            r.Span(0, InflightHeader + InflightEntry * Size).Clear();
            r.Ref<ushort>(8) = 1;
            r.Ref<ushort>(10) = (ushort)Size;
            r.Ref<ushort>(14) = _usedIdx;
            _inflightCounter = 1;
            _inflightOn = true;
            return;
        }
        if (r.Ref<ushort>(14) != _usedIdx)
        {
            // the used index was published but the entry not yet cleared: that request did complete
            ushort last = r.Ref<ushort>(12);
            if (last < Size) r.Ref<byte>(Entry(last)) = 0;
            r.Ref<ushort>(14) = _usedIdx;
        }
        if (_resubmit.Length != Size) _resubmit = new ushort[Size];
        var counters = new ulong[Size];
        ulong max = 0;
        for (int i = 0; i < Size; i++)
        {
            ulong c = r.Ref<ulong>(Entry(i) + 8);
            if (c > max) max = c;
            if (r.Ref<byte>(Entry(i)) != 1) continue;
            counters[_resubmitCount] = c;
            _resubmit[_resubmitCount++] = (ushort)i;
        }
        Array.Sort(counters, _resubmit, 0, _resubmitCount);
        _inflightCounter = max + 1;
        InflightResubmitted = _resubmitCount;
        // every head popped is either completed (counted by the used index) or still in flight
        _lastAvail = (ushort)(_usedIdx + _resubmitCount);
        _inflightOn = true;
        if (_resubmitCount > 0)
            _logger.LogWarning("queue {Queue}: {Count} request(s) were in flight when the last back-end stopped; resubmitting them", Index, _resubmitCount);
    }

    private static nuint Entry(int head) => (nuint)(InflightHeader + InflightEntry * head);

    private void MarkInflight(ushort head)
    {
        if (!_inflightOn || head >= Size) return;
        _inflightRegion.Ref<ulong>(Entry(head) + 8) = _inflightCounter++;
        Volatile.Write(ref _inflightRegion.Ref<byte>(Entry(head)), 1);
    }

    protected override DescriptorChain ResubmittedChain(ushort entry) => new() { Id = entry, SlotCount = 1 };

    protected override Walk WalkResubmitted(ushort entry, Span<BufferSegment> segments, ref DescriptorChain chain, ref string? reason) =>
        WalkSplit(entry, segments, ref chain, ref reason);

    /// <summary>Split flush with tracking: one element at a time, so a crash leaves at most the last one to repair.</summary>
    private ushort FlushSplitTracked(ushort u)
    {
        int mask = Size - 1;
        var r = _inflightRegion;
        for (int i = 0; i < _staged; i++)
        {
            ushort id = _stagedId[i];
            var e = _used.Span((nuint)(4 + 8 * (u & mask)), 8);
            BinaryPrimitives.WriteUInt32LittleEndian(e, id);
            BinaryPrimitives.WriteUInt32LittleEndian(e[4..], _stagedLen[i]);
            Volatile.Write(ref r.Ref<ushort>(12), id);
            u++;
            Volatile.Write(ref _used.Ref<ushort>(2), u);
            if (id < Size) Volatile.Write(ref r.Ref<byte>(Entry(id)), 0);
            Volatile.Write(ref r.Ref<ushort>(14), u);
        }
        return u;
    }
}
