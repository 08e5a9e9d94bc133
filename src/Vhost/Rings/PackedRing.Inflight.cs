using System.Buffers.Binary;
using Microsoft.Extensions.Logging;

namespace Vhost.Rings;

/// <summary>
/// In-flight tracking for packed rings, in the per-queue layout of the vhost-user spec: a 32-byte header
/// (u64 features, u16 version, u16 desc_num, u16 free_head, u16 old_free_head, u16 used_idx, u16 old_used_idx,
/// u8 used_wrap_counter, u8 old_used_wrap_counter, padding) and one 32-byte entry per ring slot (u8 inflight,
/// u8 pad, u16 next, u16 last, u16 num, u64 counter, u16 id, u16 flags, u32 len, u64 addr).
/// A popped chain takes one entry per descriptor from the free list (the first is its head: inflight, counter,
/// num, last) and keeps copies of its descriptors there, because the device's used writes overwrite ring
/// slots of chains still in flight. The free list, chain lengths and the id → entry map are kept in private
/// arrays too: the area is written here but only read back at start (a front-end can scribble on it at any
/// time; at start everything read from it is checked).
/// </summary>
internal sealed partial class PackedRing
{
    private const int PackedHeader = 32;
    private const int PackedEntry = 32;
    private const ushort NoEntry = ushort.MaxValue;

    private ushort[] _pNext = [];
    private ushort[] _pLast = [];
    private ushort[] _pNum = [];
    private ushort[] _pHeadId = [];
    /// <summary>Head entry + 1 of the chain in flight with this buffer id; 0: none.</summary>
    private ushort[] _entryOfId = [];
    private ushort[] _flushHeads = [];
    private int _flushHeadCount;
    private ushort _pFreeHead;
    private int _pFreeCount;
    private bool _untrackedWarned;

    private static nuint PEntry(int e) => (nuint)(PackedHeader + PackedEntry * e);

    private void EnsurePackedArrays()
    {
        if (_pNext.Length == Size) return;
        _pNext = new ushort[Size];
        _pLast = new ushort[Size];
        _pNum = new ushort[Size];
        _pHeadId = new ushort[Size];
        _entryOfId = new ushort[Size];
        _flushHeads = new ushort[Size];
        _resubmit = new ushort[Size];
    }

    /// <summary>At start: commit or roll back the last used batch, then queue every chain still in flight, oldest first.</summary>
    protected override void RecoverInflightCore()
    {
        if (_inflightQueueSize < Size || _inflightRegion.Length < PEntry(Size))
        {
            _logger.LogWarning("queue {Queue}: in-flight area for {Entries} descriptors cannot cover a ring of {Size}; not tracking", Index, _inflightQueueSize, Size);
            return;
        }
        EnsurePackedArrays();
        Array.Clear(_entryOfId);
        _flushHeadCount = 0;
        var r = _inflightRegion;
        ushort version = r.Ref<ushort>(8), descNum = r.Ref<ushort>(10);
        ushort usedIdx = r.Ref<ushort>(16), oldUsedIdx = r.Ref<ushort>(18);
        byte usedWrap = r.Ref<byte>(20), oldUsedWrap = r.Ref<byte>(21);
        if (version == 0 || descNum != Size)
        {
            InitPackedArea();
            return;
        }
        if (usedIdx >= Size || oldUsedIdx >= Size || usedWrap > 1 || oldUsedWrap > 1)
        {
            _logger.LogError("queue {Queue}: in-flight area has used index {Used}/{OldUsed} in a ring of {Size}; starting it afresh, nothing resubmitted", Index, usedIdx, oldUsedIdx, Size);
            InitPackedArea();
            return;
        }
        if (usedIdx != oldUsedIdx || usedWrap != oldUsedWrap)
        {
            // a used batch was being published: if its first slot no longer looks available to the old wrap
            // counter, the driver could see it, so it counts; otherwise it is undone
            ushort flags = _desc.Ref<ushort>((nuint)(oldUsedIdx * 16 + 14));
            if (!IsAvailable(flags, oldUsedWrap != 0))
            {
                r.Ref<ushort>(14) = r.Ref<ushort>(12);
                oldUsedIdx = usedIdx;
                oldUsedWrap = usedWrap;
            }
        }
        // roll back anything in progress
        ushort freeHead = r.Ref<ushort>(14);
        r.Ref<ushort>(12) = freeHead;
        r.Ref<ushort>(16) = r.Ref<ushort>(18) = oldUsedIdx;
        r.Ref<byte>(20) = r.Ref<byte>(21) = oldUsedWrap;
        // entries on the free list are not in flight (a pop cut short marks its head before taking it)
        var claimed = _pNum; // scratch: 1 = on the free list or in a chain
        Array.Clear(claimed);
        for (int e = freeHead, steps = 0; e < Size && steps < Size && claimed[e] == 0; steps++)
        {
            claimed[e] = 1;
            r.Ref<byte>(PEntry(e)) = 0;
            e = r.Ref<ushort>(PEntry(e) + 2);
        }
        Array.Clear(claimed);
        // heads still in flight: each must describe a chain of entries no other chain uses
        ulong max = 0;
        int count = 0, slots = 0, dropped = 0;
        var counters = new ulong[Size];
        for (int h = 0; h < Size; h++)
        {
            ulong c = r.Ref<ulong>(PEntry(h) + 8);
            if (c > max) max = c;
            if (r.Ref<byte>(PEntry(h)) != 1 || claimed[h] != 0) continue;
            if (!ClaimPackedChain(h, claimed))
            {
                r.Ref<byte>(PEntry(h)) = 0;
                dropped++;
                continue;
            }
            counters[count] = c;
            _resubmit[count++] = (ushort)h;
            slots += _pNum[h];
        }
        // claimed[] is also _pNum: it now holds each head's length (set by ClaimPackedChain) and 1 elsewhere
        // on claimed entries, which only heads' values are ever read from
        Array.Sort(counters, _resubmit, 0, count);
        // every entry not in a chain in flight is free
        int free = -1, freeCount = 0;
        for (int e = Size - 1; e >= 0; e--)
        {
            if (claimed[e] != 0) continue;
            _pNext[e] = free < 0 ? (ushort)Size : (ushort)free;
            r.Ref<ushort>(PEntry(e) + 2) = _pNext[e];
            free = e;
            freeCount++;
        }
        _pFreeHead = free < 0 ? (ushort)Size : (ushort)free;
        _pFreeCount = freeCount;
        r.Ref<ushort>(12) = r.Ref<ushort>(14) = _pFreeHead;
        _inflightCounter = max + 1;
        _resubmitCount = count;
        InflightResubmitted = count;
        // the area knows where the rings are (a front-end that lost its back-end may send a stale base):
        // used where it was last published, avail past every slot of the chains in flight
        ushort oldAvail = _lastAvail;
        bool oldAvailWrap = _availWrap;
        _usedIdx = oldUsedIdx;
        _usedWrap = oldUsedWrap != 0;
        int next = _usedIdx + slots;
        _availWrap = _usedWrap;
        if (next >= Size)
        {
            next -= Size;
            _availWrap = !_availWrap;
        }
        _lastAvail = (ushort)next;
        _signalledUsed = _usedIdx;
        _inflightOn = true;
        if (dropped > 0)
            _logger.LogError("queue {Queue}: {Count} in-flight record(s) in the area do not describe a chain; not resubmitted", Index, dropped);
        if (_lastAvail != oldAvail || _availWrap != oldAvailWrap)
            _logger.LogInformation("queue {Queue}: ring base {Base}/{Wrap} taken from the in-flight area (front-end said {Old}/{OldWrap})", Index, _lastAvail, _availWrap, oldAvail, oldAvailWrap);
        if (count > 0)
            _logger.LogWarning("queue {Queue}: {Count} request(s) were in flight when the last back-end stopped; resubmitting them", Index, count);
    }

    /// <summary>Checks the chain recorded at head <paramref name="h"/> and claims its entries; false if it is not a chain.</summary>
    private bool ClaimPackedChain(int h, ushort[] claimed)
    {
        var r = _inflightRegion;
        int num = r.Ref<ushort>(PEntry(h) + 6);
        int last = r.Ref<ushort>(PEntry(h) + 4);
        if (num < 1 || num > Size) return false;
        int e = h;
        for (int k = 0; ; k++)
        {
            if (e >= Size || claimed[e] != 0)
            {
                // undo this chain's claims
                for (int u = h, i = 0; i < k; i++, u = _pNext[u]) claimed[u] = 0;
                return false;
            }
            claimed[e] = 1;
            if (k == num - 1) break;
            _pNext[e] = r.Ref<ushort>(PEntry(e) + 2);
            e = _pNext[e];
        }
        ushort id = r.Ref<ushort>(PEntry(e) + 16);
        if (e != last || id >= Size || _entryOfId[id] != 0)
        {
            for (int u = h, i = 0; i < num; i++, u = _pNext[u]) claimed[u] = 0;
            return false;
        }
        _pLast[h] = (ushort)last;
        _pHeadId[h] = id;
        claimed[h] = (ushort)num;
        _entryOfId[id] = (ushort)(h + 1);
        return true;
    }

    private void InitPackedArea()
    {
        var r = _inflightRegion;
        r.Span(0, (int)PEntry(Size)).Clear();
        r.Ref<ushort>(8) = 1;
        r.Ref<ushort>(10) = (ushort)Size;
        for (int e = 0; e < Size; e++)
        {
            _pNext[e] = (ushort)(e + 1);
            r.Ref<ushort>(PEntry(e) + 2) = _pNext[e];
        }
        _pFreeHead = 0;
        _pFreeCount = Size;
        r.Ref<ushort>(16) = r.Ref<ushort>(18) = _usedIdx;
        r.Ref<byte>(20) = r.Ref<byte>(21) = _usedWrap ? (byte)1 : (byte)0;
        _inflightCounter = 1;
        _inflightOn = true;
    }

    /// <summary>Records the chain just walked at slots [start, start + slots) as in flight.</summary>
    private void MarkInflightPacked(int start, int slots, ushort id)
    {
        if (id >= Size || _entryOfId[id] != 0 || slots > _pFreeCount)
        {
            if (!_untrackedWarned)
            {
                _untrackedWarned = true;
                _logger.LogWarning("queue {Queue}: buffer id {Id} is beyond the ring, already in flight, or more slots are in flight than the ring has; such chains are served but not tracked", Index, id);
            }
            return;
        }
        var r = _inflightRegion;
        int head = _pFreeHead;
        nuint h = PEntry(head);
        r.Ref<ushort>(h + 6) = 0;
        r.Ref<ulong>(h + 8) = _inflightCounter++;
        Volatile.Write(ref r.Ref<byte>(h), 1);
        int e = head, pos = start;
        for (int k = 0; k < slots; k++)
        {
            var d = _desc.Span((nuint)(pos * 16), 16);
            nuint at = PEntry(e);
            r.Ref<ulong>(at + 24) = BinaryPrimitives.ReadUInt64LittleEndian(d);
            r.Ref<uint>(at + 20) = BinaryPrimitives.ReadUInt32LittleEndian(d[8..]);
            r.Ref<ushort>(at + 16) = BinaryPrimitives.ReadUInt16LittleEndian(d[12..]);
            r.Ref<ushort>(at + 18) = BinaryPrimitives.ReadUInt16LittleEndian(d[14..]);
            if (k == slots - 1)
            {
                r.Ref<ushort>(h + 4) = (ushort)e;
                _pLast[head] = (ushort)e;
            }
            r.Ref<ushort>(h + 6) = (ushort)(k + 1);
            e = _pNext[e];
            Volatile.Write(ref r.Ref<ushort>(12), (ushort)e);
            if (++pos == Size) pos = 0;
        }
        _pNum[head] = (ushort)slots;
        _pHeadId[head] = id;
        _pFreeHead = (ushort)e;
        _pFreeCount -= slots;
        Volatile.Write(ref r.Ref<ushort>(14), (ushort)e);
        _entryOfId[id] = (ushort)(head + 1);
    }

    /// <summary>Flush, before the batch is published: its entries back on the free list, the area's new used index.</summary>
    private void InflightPackedBeforePublish(int usedIdx, bool usedWrap)
    {
        var r = _inflightRegion;
        _flushHeadCount = 0;
        for (int i = 0; i < _staged; i++)
        {
            ushort id = _stagedId[i];
            if (id >= Size || _entryOfId[id] == 0) continue;
            int head = _entryOfId[id] - 1;
            _entryOfId[id] = 0;
            int last = _pLast[head];
            _pNext[last] = _pFreeHead;
            r.Ref<ushort>(PEntry(last) + 2) = _pFreeHead;
            _pFreeHead = (ushort)head;
            _pFreeCount += _pNum[head];
            Volatile.Write(ref r.Ref<ushort>(12), (ushort)head);
            _flushHeads[_flushHeadCount++] = (ushort)head;
        }
        Volatile.Write(ref r.Ref<ushort>(16), (ushort)usedIdx);
        Volatile.Write(ref r.Ref<byte>(20), usedWrap ? (byte)1 : (byte)0);
    }

    /// <summary>Flush, after the batch is published: its heads no longer in flight, and the state committed.</summary>
    private void InflightPackedAfterPublish()
    {
        var r = _inflightRegion;
        for (int i = 0; i < _flushHeadCount; i++) Volatile.Write(ref r.Ref<byte>(PEntry(_flushHeads[i])), 0);
        Volatile.Write(ref r.Ref<ushort>(14), _pFreeHead);
        Volatile.Write(ref r.Ref<ushort>(18), r.Ref<ushort>(16));
        Volatile.Write(ref r.Ref<byte>(21), r.Ref<byte>(20));
    }

    /// <summary>Rewind of the most recently popped chain: its entries go back to the front of the free list.</summary>
    private void UnmarkInflightPacked(ushort id)
    {
        if (id >= Size || _entryOfId[id] == 0) return;
        int head = _entryOfId[id] - 1;
        if (_pNext[_pLast[head]] != _pFreeHead) return; // not the latest taken: leave it recorded
        _entryOfId[id] = 0;
        var r = _inflightRegion;
        r.Ref<byte>(PEntry(head)) = 0;
        _pFreeHead = (ushort)head;
        _pFreeCount += _pNum[head];
        _inflightCounter--;
        r.Ref<ushort>(12) = r.Ref<ushort>(14) = (ushort)head;
    }

    protected override DescriptorChain ResubmittedChain(ushort entry) => new() { Id = _pHeadId[entry], SlotCount = _pNum[entry] };

    protected override Walk WalkResubmitted(ushort entry, Span<BufferSegment> segments, ref DescriptorChain chain, ref string? reason) =>
        WalkResubmittedPacked(entry, segments, ref chain, ref reason);

    /// <summary>Walks a chain found in flight at start from the descriptors kept in the area.</summary>
    private Walk WalkResubmittedPacked(int head, Span<BufferSegment> segments, ref DescriptorChain chain, ref string? reason)
    {
        var r = _inflightRegion;
        var result = Walk.Ok;
        int e = head;
        for (int k = 0; k < _pNum[head] && result == Walk.Ok; k++, e = _pNext[e])
        {
            nuint at = PEntry(e);
            ulong addr = r.Ref<ulong>(at + 24);
            uint len = r.Ref<uint>(at + 20);
            ushort flags = r.Ref<ushort>(at + 18);
            result = (flags & DescIndirect) != 0
                ? WalkPackedIndirect(addr, len, segments, ref chain, ref reason)
                : AddBuffer(addr, len, (flags & DescWrite) != 0, segments, ref chain, ref reason);
        }
        return result;
    }
}
