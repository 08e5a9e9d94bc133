using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Vhost.Interop;

namespace Vhost.Rings;

/// <summary>The split ring engine: descriptor table, avail ring (driver → device), used ring (device → driver).</summary>
internal sealed partial class SplitRing : RingEngine
{
    private const ushort AvailNoInterrupt = 1;
    private const ushort UsedNoNotify = 1;

    public SplitRing(Virtqueue queue) : base(queue)
    {
    }

    internal override void SetBase(uint value)
    {
        _lastAvail = (ushort)value;
        _usedIdx = (ushort)value;
        _signalledUsed = _usedIdx;
        _signalledValid = false;
    }

    internal override uint GetBase() => _lastAvail;

    protected override void OnStart()
    {
        // The used index in guest memory is the truth after a reconnect: whatever was popped but never
        // completed by an earlier back-end is offered again (as DPDK does when nothing tracks in-flight).
        ushort used = Volatile.Read(ref _used.Ref<ushort>(2));
        if (used != _lastAvail)
        {
            _logger.LogWarning("queue {Queue}: avail base {Base} but used index {Used}; resuming from the used index", Index, _lastAvail, used);
            _lastAvail = used;
        }
        _usedIdx = used;
    }

    internal override int AvailableCount
    {
        get
        {
            if (!Started) return 0;
            ushort n = (ushort)(Volatile.Read(ref _avail.Ref<ushort>(2)) - _lastAvail);
            return n <= Size ? n : 0;
        }
    }

    protected override bool RingDry => Volatile.Read(ref _avail.Ref<ushort>(2)) == _lastAvail;

    internal override void Rewind(ReadOnlySpan<DescriptorChain> chains) => _lastAvail -= (ushort)chains.Length;

    protected override int PopCore(Span<DescriptorChain> chains, Span<BufferSegment> segments)
    {
        int n = 0, used = 0;
        if (_resubmitAt < _resubmitCount) PopResubmitted(chains, segments, ref n, ref used);
        ushort availIdx = Volatile.Read(ref _avail.Ref<ushort>(2));
        ushort pending = (ushort)(availIdx - _lastAvail);
        if (pending == 0) return n;
        if (pending > Size)
        {
            Fault($"avail index {availIdx} is {pending} entries ahead of {_lastAvail} in a ring of {Size}");
            return n;
        }
        int mask = Size - 1;
        while (n < chains.Length && pending > 0)
        {
            ushort head = _avail.Ref<ushort>((nuint)(4 + 2 * (_lastAvail & mask)));
            if (head < Size && BitConverter.IsLittleEndian && used < segments.Length)
            {
                // fast path: a chain of one direct descriptor (every frame of DPDK's and Linux's net drivers
                // with in-order or mergeable buffers); copied once, so the guest cannot change it under us
                var d = _desc.Ref<RawDescriptor>((nuint)head * 16);
                if ((d.Word12 & (DescNext | DescIndirect)) == 0
                    && TrySingle(d.Addr, d.Len, (d.Word12 & DescWrite) != 0, segments, used, head, 1, out chains[n]))
                {
                    n++;
                    used++;
                    _lastAvail++;
                    pending--;
                    MarkInflight(head);
                    continue;
                }
            }
            var chain = new DescriptorChain { Id = head, SlotCount = 1 };
            string? reason = null;
            var r = head < Size
                ? WalkSplit(head, segments[used..], ref chain, ref reason)
                : Walk.Bad;
            // under a vIOMMU: the chain waits in the ring for its IOTLB update, and so does everything after it
            if (r == Walk.Miss) break;
            if (r == Walk.NoRoom)
            {
                if (used > 0) break;
                r = Walk.Bad;
                reason = $"chain needs more than {segments.Length} segments";
            }
            _lastAvail++;
            pending--;
            MarkInflight(head);
            if (r == Walk.Bad)
            {
                BadChain(reason ?? $"head index {head} out of range (ring of {Size})");
                if (head < Size) PushUsed(head, 1, 0);
                continue;
            }
            chain.SegmentStart = used;
            used += chain.SegmentCount;
            chains[n++] = chain;
        }
        if (AvailEvent && _notifyEnabled) WriteAvailEvent();
        return n;
    }

    private Walk WalkSplit(ushort head, Span<BufferSegment> segments, ref DescriptorChain chain, ref string? reason)
    {
        NativeWindow table = _desc;
        int tableSize = Size;
        int limit = Size;
        int seen = 0;
        bool indirect = false;
        uint idx = head;
        while (true)
        {
            if (idx >= (uint)tableSize)
            {
                reason = $"next index {idx} out of range (table of {tableSize})";
                return Walk.Bad;
            }
            if (++seen > limit)
            {
                reason = indirect ? "indirect chain loops or is longer than its table" : "chain loops or is longer than the ring";
                return Walk.Bad;
            }
            var d = table.Span((nuint)(idx * 16), 16);
            ulong addr = BinaryPrimitives.ReadUInt64LittleEndian(d);
            uint len = BinaryPrimitives.ReadUInt32LittleEndian(d[8..]);
            ushort flags = BinaryPrimitives.ReadUInt16LittleEndian(d[12..]);
            ushort next = BinaryPrimitives.ReadUInt16LittleEndian(d[14..]);
            if ((flags & DescIndirect) != 0)
            {
                if (!IndirectAllowed) { reason = "indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC"; return Walk.Bad; }
                if (indirect) { reason = "indirect descriptor inside an indirect table"; return Walk.Bad; }
                if ((flags & DescNext) != 0) { reason = "indirect descriptor with NEXT set"; return Walk.Bad; }
                if (len == 0 || len % 16 != 0 || len / 16 > MaxIndirectEntries)
                {
                    reason = $"indirect table of {len} bytes (must be a non-zero multiple of 16)";
                    return Walk.Bad;
                }
                var t = TranslateTable(addr, len, out table, ref reason);
                if (t != Walk.Ok) return t;
                indirect = true;
                tableSize = (int)(len / 16);
                limit = tableSize;
                seen = 0;
                idx = 0;
                continue;
            }
            var r = AddBuffer(addr, len, (flags & DescWrite) != 0, segments, ref chain, ref reason);
            if (r != Walk.Ok) return r;
            if ((flags & DescNext) == 0) return Walk.Ok;
            idx = next;
        }
    }

    protected override void FlushCore()
    {
        int mask = Size - 1;
        ushort old = _usedIdx;
        ushort u = _usedIdx;
        if (_inflightOn)
        {
            // the tracked flush publishes the index itself, between its in-flight area updates
            u = FlushSplitTracked(u);
            _usedIdx = u;
            if (_log != null) LogUsedElements(old, u);
            InterruptIfAskedSplit(old, u);
            return;
        }
        var ids = _stagedId.AsSpan(0, _staged);
        var lens = _stagedLen.AsSpan(0, _staged);
        for (int i = 0; i < ids.Length; i++)
        {
            // one 8-byte store per used element (id, len), little-endian as the ring is
            ulong e = ids[i] | ((ulong)lens[i] << 32);
            _used.Ref<ulong>((nuint)(4 + 8 * (u & mask))) = BitConverter.IsLittleEndian ? e : BinaryPrimitives.ReverseEndianness(e);
            u++;
        }
        PublishSplit(old, u);
    }

    /// <summary>Moves the used index from <paramref name="old"/> to <paramref name="u"/> over elements already written.</summary>
    private void PublishSplit(ushort old, ushort u)
    {
        // release: the elements must be visible before the index that publishes them
        Volatile.Write(ref _used.Ref<ushort>(2), u);
        _usedIdx = u;
        if (_log != null) LogUsedElements(old, u);
        InterruptIfAskedSplit(old, u);
    }

    /// <summary>After the used index moved from <paramref name="old"/> to <paramref name="u"/>: event index or flags decide.</summary>
    private void InterruptIfAskedSplit(ushort old, ushort u)
    {
        if (AvailEvent && _notifyEnabled) WriteAvailEvent();
        // store (used idx) → load (flags / used_event) needs a full fence
        Interlocked.MemoryBarrier();
        bool interrupt;
        if (EventIdx)
        {
            // as Linux and DPDK: measured from the index of the last check, and always after a (re)start, when the
            // driver's used_event may lie anywhere (a driver may also move it backwards)
            ushort usedEvent = Volatile.Read(ref _avail.Ref<ushort>((nuint)(4 + 2 * Size)));
            interrupt = !_signalledValid || NeedEvent(usedEvent, u, _signalledUsed);
        }
        else
        {
            interrupt = (Volatile.Read(ref _avail.Ref<ushort>(0)) & AvailNoInterrupt) == 0;
        }
        _signalledUsed = u;
        _signalledValid = true;
        if (interrupt) Interrupt();
    }

    /// <summary>The split ring's form of <see cref="Virtqueue.Fill"/>: one-descriptor writable chains, used elements written in place.</summary>
    internal int Fill<TFiller>(ref TFiller filler, int count) where TFiller : IBufferFiller, allows ref struct =>
        _iotlb == null
            ? (_log == null ? Fill<TFiller, LogOff, PhysicalAddresses>(ref filler, count) : Fill<TFiller, LogOn, PhysicalAddresses>(ref filler, count))
            : (_log == null ? Fill<TFiller, LogOff, IoVirtualAddresses>(ref filler, count) : Fill<TFiller, LogOn, IoVirtualAddresses>(ref filler, count));

    private int Fill<TFiller, TLog, TAddr>(ref TFiller filler, int count)
        where TFiller : IBufferFiller, allows ref struct where TLog : struct, ILogMode where TAddr : struct, IAddressMode
    {
        ushort availIdx = Volatile.Read(ref _avail.Ref<ushort>(2));
        ushort last = _lastAvail;
        int pending = (ushort)(availIdx - last);
        // more than a ring ahead is the general path's to report
        if (pending == 0 || pending > Size) return 0;
        if (count > pending) count = pending;
        // typed views of the rings, made once, and the indexes in locals: the loop reads and writes guest
        // memory and nothing else, so no field or window is reloaded and nothing is stored per frame but the
        // frame and its used element (see FrameCopy on why stores per frame matter here)
        ReadOnlySpan<ushort> ring = MemoryMarshal.Cast<byte, ushort>(_avail.Span(4, 2 * Size));
        ReadOnlySpan<RawDescriptor> table = MemoryMarshal.Cast<byte, RawDescriptor>(_desc.Span(0, 16 * Size));
        Span<ulong> usedRing = MemoryMarshal.Cast<byte, ulong>(_used.Span(4, 8 * Size));
        var memory = _memory;
        int mask = Size - 1;
        ushort old = _usedIdx;
        int n = 0;
        for (; n < count; n++)
        {
            ushort head = ring[(last + n) & mask];
            if (head >= table.Length) break;
            // each field read once: the driver may rewrite the descriptor while we look
            ref readonly var d = ref table[head];
            if ((d.Word12 & (DescNext | DescIndirect | DescWrite)) != DescWrite) break;
            uint len = d.Len;
            ulong addr = d.Addr;
            int need = filler.Needed(n);
            if (need <= 0 || len < (uint)need || len > MaxChainBytes || !TryTranslateFast<TAddr>(memory, addr, len, true, out var w, out ulong gpa)) break;
            filler.Fill(n, w.Span(0, need));
            if (TLog.On) LogGpa(gpa, (uint)need);
            usedRing[(old + n) & mask] = head | ((ulong)(uint)need << 32);
        }
        if (n == 0) return 0;
        _lastAvail = (ushort)(last + n);
        PublishSplit(old, (ushort)(old + n));
        return n;
    }

    /// <summary>The split ring's form of <see cref="Virtqueue.Take"/>: one-descriptor readable chains, used elements written in place.</summary>
    internal int Take<TTaker>(ref TTaker taker, int count) where TTaker : IBufferTaker, allows ref struct =>
        _iotlb == null ? Take<TTaker, PhysicalAddresses>(ref taker, count) : Take<TTaker, IoVirtualAddresses>(ref taker, count);

    private int Take<TTaker, TAddr>(ref TTaker taker, int count) where TTaker : IBufferTaker, allows ref struct where TAddr : struct, IAddressMode
    {
        ushort availIdx = Volatile.Read(ref _avail.Ref<ushort>(2));
        int pending = (ushort)(availIdx - _lastAvail);
        if (pending == 0 || pending > Size) return 0;
        count = Math.Min(count, pending);
        int mask = Size - 1;
        ushort old = _usedIdx, u = _usedIdx;
        int n = 0;
        bool evict = EvictingTakenLines;
        nuint skip = (nuint)_policy.TakenLineEvictionSkip;
        Span<NativeWindow> ahead = stackalloc NativeWindow[TakeAhead];
        Span<ushort> aheadHead = stackalloc ushort[TakeAhead];
        while (n < count)
        {
            // as in TakePacked, a few buffers looked up ahead, but their lines are not prefetched: on a split ring
            // that measured 3 % slower (docs/benchmarks.md, eleventh session)
            int k = 0;
            while (k < ahead.Length && n + k < count)
            {
                ushort head = _avail.Ref<ushort>((nuint)(4 + 2 * ((_lastAvail + k) & mask)));
                if (head >= Size) break;
                var d = _desc.Ref<RawDescriptor>((nuint)head * 16);
                if ((d.Word12 & (DescNext | DescIndirect)) != 0 || ((d.Word12 & DescWrite) != 0 && !_policy.DeviceReadsOnly)) break;
                if (d.Len == 0 || d.Len > MaxChainBytes || !TryTranslateFast<TAddr>(_memory, d.Addr, d.Len, false, out ahead[k], out _)) break;
                aheadHead[k] = head;
                k++;
            }
            int took = 0;
            for (; took < k; took++)
            {
                if (!taker.Take(n, ahead[took].Span(0, (int)ahead[took].Length))) break;
                if (evict && ahead[took].Length > skip) ahead[took].Evict(skip, ahead[took].Length - skip);
                _used.Ref<ulong>((nuint)(4 + 8 * (u & mask))) = aheadHead[took];
                u++;
                _lastAvail++;
                n++;
            }
            if (took < ahead.Length) break;
        }
        if (n == 0) return 0;
        PublishSplit(old, u);
        if (TuningTakenLines) _evictTuner.Count(n);
        return n;
    }

    private void WriteAvailEvent()
    {
        Volatile.Write(ref _used.Ref<ushort>((nuint)(4 + 8 * Size)), _lastAvail);
        if (_log != null) LogUsedArea((uint)(4 + 8 * Size), 2);
    }

    protected override void SetNotificationsCore(bool enabled)
    {
        if (EventIdx)
        {
            // with event idx a stale avail_event is as good as "off": the guest kicks only when it crosses it
            if (enabled) WriteAvailEvent();
            return;
        }
        ref ushort flags = ref _used.Ref<ushort>(0);
        Volatile.Write(ref flags, enabled ? (ushort)(flags & ~UsedNoNotify) : (ushort)(flags | UsedNoNotify));
        if (_log != null) LogUsedArea(0, 2);
        // a guest that negotiated event idx with its front-end only reads avail_event, not the flags
        if (enabled && AvailEvent) WriteAvailEvent();
    }
}
