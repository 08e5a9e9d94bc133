using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Vhost.Interop;

namespace Vhost.Rings;

/// <summary>
/// The packed ring engine: one descriptor ring shared by driver and device. A slot is available when its AVAIL
/// bit equals the driver's wrap counter and its USED bit does not; the device marks it used by making both
/// bits equal its own wrap counter.
/// </summary>
internal sealed partial class PackedRing : RingEngine
{
    private bool _availWrap = true;
    private bool _usedWrap = true;

    public PackedRing(Virtqueue queue) : base(queue)
    {
    }

    /// <summary>Bits 0-14 index, bit 15 wrap counter; the front-end may put the used index and wrap in the upper half (as DPDK does).</summary>
    internal override void SetBase(uint value)
    {
        _lastAvail = (ushort)(value & 0x7fff);
        _availWrap = ((value >> 15) & 1) != 0;
        uint high = value >> 16;
        _usedIdx = high != 0 ? (ushort)(high & 0x7fff) : _lastAvail;
        _usedWrap = high != 0 ? ((high >> 15) & 1) != 0 : _availWrap;
        _signalledUsed = _usedIdx;
        _signalledValid = false;
        _heldCount = 0;
    }

    /// <summary>Avail index and wrap in the low half, used index and wrap in the high half: QEMU keeps both and hands
    /// them to the next back-end (DPDK takes its used index from there).</summary>
    internal override uint GetBase() =>
        (uint)(_lastAvail | (_availWrap ? 0x8000 : 0)) | ((uint)(_usedIdx | (_usedWrap ? 0x8000 : 0)) << 16);

    internal override string? CheckBase(int size) =>
        _lastAvail >= size || _usedIdx >= size ? $"packed ring base {Math.Max(_lastAvail, _usedIdx)} beyond ring size {size}" : null;

    internal override int AvailableCount => Started && PackedHeadAvailable() ? 1 : 0;

    protected override bool RingDry => !PackedHeadAvailable();

    internal override void Rewind(ReadOnlySpan<DescriptorChain> chains)
    {
        for (int i = chains.Length - 1; i >= 0; i--)
        {
            int prev = _lastAvail - chains[i].SlotCount;
            if (prev < 0)
            {
                prev += Size;
                _availWrap = !_availWrap;
            }
            _lastAvail = (ushort)prev;
            if (_inflightOn) UnmarkInflightPacked(chains[i].Id);
        }
    }

    // the batch Take holds: its first slot and that slot's used flags, the last id, how many buffers
    private ushort _heldFirst, _heldFlags, _heldLastId;
    private int _heldCount;

    internal override void ReturnHeldTaken()
    {
        if (_heldCount > 0 && Started) ReturnHeld();
    }

    private const ushort PackedAvail = 1 << 7;
    private const ushort PackedUsed = 1 << 15;
    private const ushort EventEnable = 0;
    private const ushort EventDisable = 1;
    private const ushort EventDesc = 2;

    private bool PackedHeadAvailable()
    {
        ushort flags = Volatile.Read(ref _desc.Ref<ushort>((nuint)(_lastAvail * 16 + 14)));
        return IsAvailable(flags, _availWrap);
    }

    private static bool IsAvailable(ushort flags, bool wrap) =>
        ((flags & PackedAvail) != 0) == wrap && ((flags & PackedUsed) != 0) != wrap;

    protected override int PopCore(Span<DescriptorChain> chains, Span<BufferSegment> segments)
    {
        int n = 0, used = 0;
        if (_resubmitAt < _resubmitCount) PopResubmitted(chains, segments, ref n, ref used);
        while (n < chains.Length)
        {
            // acquire: the head's flags are written last by the driver; the rest of the chain is visible after
            ushort headFlags = Volatile.Read(ref _desc.Ref<ushort>((nuint)(_lastAvail * 16 + 14)));
            if (!IsAvailable(headFlags, _availWrap)) break;
            if ((headFlags & (DescNext | DescIndirect)) == 0 && BitConverter.IsLittleEndian && used < segments.Length)
            {
                // fast path: a one-slot chain; the descriptor is copied once, after the flags were read
                var d = _desc.Ref<RawDescriptor>((nuint)_lastAvail * 16);
                if (TrySingle(d.Addr, d.Len, (headFlags & DescWrite) != 0, segments, used, d.Word12, 1, out chains[n]))
                {
                    n++;
                    used++;
                    if (_inflightOn) MarkInflightPacked(_lastAvail, 1, d.Word12);
                    AdvanceAvail(1);
                    continue;
                }
            }
            var chain = new DescriptorChain();
            string? reason = null;
            var r = WalkPacked(headFlags, segments[used..], ref chain, ref reason, out int slots, out ushort id);
            if (Q.Faulted) return n;
            // under a vIOMMU: the chain waits in the ring for its IOTLB update, and so does everything after it
            if (r == Walk.Miss) break;
            if (r == Walk.NoRoom)
            {
                if (used > 0) break;
                r = Walk.Bad;
                reason = $"chain needs more than {segments.Length} segments";
            }
            chain.Id = id;
            chain.SlotCount = (ushort)slots;
            if (_inflightOn) MarkInflightPacked(_lastAvail, slots, id);
            AdvanceAvail(slots);
            if (r == Walk.Bad)
            {
                BadChain(reason ?? "bad chain");
                PushUsed(id, (ushort)slots, 0);
                // staged ahead of good chains popped before it: the staged order is no longer the ring's
                _stagedOutOfOrder = true;
                continue;
            }
            chain.SegmentStart = used;
            used += chain.SegmentCount;
            chains[n++] = chain;
        }
        return n;
    }

    private void AdvanceAvail(int slots)
    {
        int next = _lastAvail + slots;
        if (next >= Size)
        {
            next -= Size;
            _availWrap = !_availWrap;
        }
        _lastAvail = (ushort)next;
    }

    /// <summary>
    /// Walks one chain from _lastAvail. Always finds the chain's end (so a bad chain can be skipped whole);
    /// a chain that runs past the ring size faults the queue.
    /// </summary>
    private Walk WalkPacked(ushort headFlags, Span<BufferSegment> segments, ref DescriptorChain chain, ref string? reason, out int slots, out ushort id)
    {
        var result = Walk.Ok;
        int idx = _lastAvail;
        slots = 0;
        id = 0;
        while (true)
        {
            if (++slots > Size)
            {
                Fault("packed descriptor chain does not end within the ring");
                return Walk.Bad;
            }
            var d = _desc.Span((nuint)(idx * 16), 16);
            ulong addr = BinaryPrimitives.ReadUInt64LittleEndian(d);
            uint len = BinaryPrimitives.ReadUInt32LittleEndian(d[8..]);
            id = BinaryPrimitives.ReadUInt16LittleEndian(d[12..]);
            // the head's flags were read once, by the caller's availability check: use that copy, not a second read
            ushort flags = slots == 1 ? headFlags : BinaryPrimitives.ReadUInt16LittleEndian(d[14..]);
            if (result == Walk.Ok)
            {
                if ((flags & DescIndirect) != 0)
                    result = (flags & DescNext) != 0
                        ? BadReason(ref reason, "indirect descriptor with NEXT set")
                        : WalkPackedIndirect(addr, len, segments, ref chain, ref reason);
                else
                    result = AddBuffer(addr, len, (flags & DescWrite) != 0, segments, ref chain, ref reason);
                // no return on NoRoom: the caller may skip the chain as bad, and must then know all its slots
            }
            if ((flags & DescNext) == 0) return result;
            if (++idx == Size) idx = 0;
        }
    }

    private static Walk BadReason(ref string? reason, string text)
    {
        reason = text;
        return Walk.Bad;
    }

    private Walk WalkPackedIndirect(ulong addr, uint len, Span<BufferSegment> segments, ref DescriptorChain chain, ref string? reason)
    {
        if (!IndirectAllowed) return BadReason(ref reason, "indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC");
        if (len == 0 || len % 16 != 0 || len / 16 > MaxIndirectEntries)
            return BadReason(ref reason, $"indirect table of {len} bytes (must be a non-zero multiple of 16)");
        var t = TranslateTable(addr, len, out NativeWindow table, ref reason);
        if (t != Walk.Ok) return t;
        int count = (int)(len / 16);
        for (int i = 0; i < count; i++)
        {
            var d = table.Span((nuint)(i * 16), 16);
            ulong a = BinaryPrimitives.ReadUInt64LittleEndian(d);
            uint l = BinaryPrimitives.ReadUInt32LittleEndian(d[8..]);
            ushort f = BinaryPrimitives.ReadUInt16LittleEndian(d[14..]);
            if ((f & DescIndirect) != 0) return BadReason(ref reason, "indirect descriptor inside an indirect table");
            var r = AddBuffer(a, l, (f & DescWrite) != 0, segments, ref chain, ref reason);
            if (r != Walk.Ok) return r;
        }
        return Walk.Ok;
    }

    protected override void FlushCore()
    {
        // used descriptors go out in ring order: held ones first
        if (_heldCount > 0) ReturnHeld();
        ushort old = _usedIdx;
        int firstIdx = _usedIdx;
        ushort firstFlags = 0;
        int u = _usedIdx;
        bool wrap = _usedWrap;
        int singles = _policy.BatchInOrderUsed && InOrder && !_stagedOutOfOrder ? BatchableInOrder() : 0;
        if (singles < 2) singles = 0;
        if (singles > 0)
        {
            // VIRTIO_F_IN_ORDER: one used descriptor, carrying the last buffer's id, returns the whole batch
            // (spec "In-order use of descriptors"); the driver frees up to that id. Only chains the device
            // wrote nothing to qualify: their lengths are all zero, so no element's length is lost.
            var d = _desc.Span((nuint)(u * 16), 16);
            BinaryPrimitives.WriteUInt32LittleEndian(d[8..], 0);
            BinaryPrimitives.WriteUInt16LittleEndian(d[12..], _stagedId[singles - 1]);
            firstFlags = wrap ? (ushort)(PackedAvail | PackedUsed) : (ushort)0;
            for (int i = 0; i < singles; i++)
            {
                u += _stagedSlots[i];
                if (u >= Size)
                {
                    u -= Size;
                    wrap = !wrap;
                }
            }
        }
        for (int i = singles; i < _staged; i++)
        {
            var d = _desc.Span((nuint)(u * 16), 16);
            ushort flags = (ushort)((wrap ? PackedAvail | PackedUsed : 0) | (_stagedLen[i] > 0 ? DescWrite : 0));
            BinaryPrimitives.WriteUInt32LittleEndian(d[8..], _stagedLen[i]);
            BinaryPrimitives.WriteUInt16LittleEndian(d[12..], _stagedId[i]);
            if (i == 0 && singles == 0) firstFlags = flags;
            else Volatile.Write(ref _desc.Ref<ushort>((nuint)(u * 16 + 14)), flags);
            u += _stagedSlots[i];
            if (u >= Size)
            {
                u -= Size;
                wrap = !wrap;
            }
        }
        if (_inflightOn) InflightPackedBeforePublish(u, wrap);
        // the batch becomes visible at once: its first descriptor's flags go last (release)
        Volatile.Write(ref _desc.Ref<ushort>((nuint)(firstIdx * 16 + 14)), firstFlags);
        if (_inflightOn) InflightPackedAfterPublish();
        if (_log != null)
        {
            int advanced = 0;
            for (int i = 0; i < _staged; i++) advanced += _stagedSlots[i];
            LogDescriptors(firstIdx, advanced);
        }
        _usedIdx = (ushort)u;
        _usedWrap = wrap;
        InterruptIfAskedPacked(old);
    }

    /// <summary>After used descriptors from <paramref name="old"/> on were published: the driver's event suppression decides.</summary>
    private void InterruptIfAskedPacked(ushort old)
    {
        Interlocked.MemoryBarrier();
        ushort evFlags = Volatile.Read(ref _avail.Ref<ushort>(2));
        bool interrupt;
        if (evFlags != EventDesc || !EventIdx)
        {
            interrupt = evFlags != EventDisable;
        }
        else
        {
            ushort offWrap = Volatile.Read(ref _avail.Ref<ushort>(0));
            int off = offWrap & 0x7fff;
            int newIdx = _usedIdx;
            int oldIdx = _signalledUsed;
            if (newIdx <= oldIdx) oldIdx -= Size;
            if (((offWrap >> 15) != 0) != _usedWrap) off -= Size;
            // as in the split ring: from the last check, and always once after a (re)start
            interrupt = !_signalledValid || (ushort)(newIdx - off - 1) < (ushort)(newIdx - oldIdx);
        }
        _signalledValid = true;
        _signalledUsed = _usedIdx;
        if (interrupt) Interrupt();
    }

    /// <summary>The packed ring's form of <see cref="Virtqueue.Fill"/>.</summary>
    internal int Fill<TFiller>(ref TFiller filler, int count) where TFiller : IBufferFiller, allows ref struct =>
        _iotlb == null
            ? (_log == null ? Fill<TFiller, LogOff, PhysicalAddresses>(ref filler, count) : Fill<TFiller, LogOn, PhysicalAddresses>(ref filler, count))
            : (_log == null ? Fill<TFiller, LogOff, IoVirtualAddresses>(ref filler, count) : Fill<TFiller, LogOn, IoVirtualAddresses>(ref filler, count));

    private int Fill<TFiller, TLog, TAddr>(ref TFiller filler, int count)
        where TFiller : IBufferFiller, allows ref struct where TLog : struct, ILogMode where TAddr : struct, IAddressMode
    {
        if (_heldCount > 0) ReturnHeld();
        // the ring as a span made once and the indexes in locals, as in FillSplit: per frame the loop stores
        // the frame, its length and its flags, nothing else
        Span<RawDescriptor> ring = MemoryMarshal.Cast<byte, RawDescriptor>(_desc.Span(0, 16 * Size));
        var memory = _memory;
        int size = ring.Length;
        int slot = _lastAvail, u = _usedIdx;
        bool availWrap = _availWrap, wrap = _usedWrap;
        int first = u;
        // used descriptors [marked, u) hold their lengths but not yet their flags: the flags go out a ring line
        // (four descriptors) at a time, as in DPDK's batch path, so the driver's line changes hands once per
        // four; the call's first descriptor is marked last, so the driver sees the call's work at once.
        // Marking happens at every lap's end too, so the descriptors waiting always belong to the lap of wrap.
        int marked = u;
        int n = 0;
        while (n < count)
        {
            ref var d = ref ring[slot];
            // acquire: the driver writes the flags last; the rest of the descriptor is read after them, once
            ushort flags = Volatile.Read(ref d.Word14);
            if (!IsAvailable(flags, availWrap) || (flags & (DescNext | DescIndirect | DescWrite)) != DescWrite) break;
            int need = filler.Needed(n);
            uint len = d.Len;
            ulong addr = d.Addr;
            if (need <= 0 || len < (uint)need || len > MaxChainBytes || !TryTranslateFast<TAddr>(memory, addr, len, true, out var w, out ulong gpa)) break;
            ushort id = d.Word12;
            filler.Fill(n, w.Span(0, need));
            if (TLog.On) LogGpa(gpa, (uint)need);
            ref var used = ref ring[u];
            used.Len = (uint)need;
            // in order, the used slot is the one the buffer came in, and its id is already there
            if (u != slot) used.Word12 = id;
            n++;
            if (++slot == size)
            {
                slot = 0;
                availWrap = !availWrap;
            }
            if (++u == size || (u & 3) == 0)
            {
                MarkUsed(ring, marked, u, wrap, first);
                if (u == size)
                {
                    u = 0;
                    wrap = !wrap;
                }
                marked = u;
            }
        }
        if (n == 0) return 0;
        MarkUsed(ring, marked, u, wrap, first);
        Volatile.Write(ref ring[first].Word14, UsedWritableFlags(_usedWrap));
        if (TLog.On) LogDescriptors(first, n);
        ushort old = _usedIdx;
        _lastAvail = (ushort)slot;
        _availWrap = availWrap;
        _usedIdx = (ushort)u;
        _usedWrap = wrap;
        InterruptIfAskedPacked(old);
        return n;
    }

    /// <summary>Marks used descriptors [from, to) of one lap with their flags (release), except <paramref name="skip"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void MarkUsed(Span<RawDescriptor> ring, int from, int to, bool wrap, int skip)
    {
        ushort flags = UsedWritableFlags(wrap);
        for (int s = from; s < to; s++)
        {
            if (s != skip) Volatile.Write(ref ring[s].Word14, flags);
        }
    }

    private static ushort UsedWritableFlags(bool wrap) => (ushort)((wrap ? PackedAvail | PackedUsed : 0) | DescWrite);

    /// <summary>The packed ring's form of <see cref="Virtqueue.Take"/>; with VIRTIO_F_IN_ORDER and <see cref="QueuePolicy.BatchInOrderUsed"/> one used descriptor returns them all.</summary>
    internal int Take<TTaker>(ref TTaker taker, int count) where TTaker : IBufferTaker, allows ref struct =>
        _iotlb == null ? Take<TTaker, PhysicalAddresses>(ref taker, count) : Take<TTaker, IoVirtualAddresses>(ref taker, count);

    private int Take<TTaker, TAddr>(ref TTaker taker, int count) where TTaker : IBufferTaker, allows ref struct where TAddr : struct, IAddressMode
    {
        bool oneUsed = _policy.BatchInOrderUsed && InOrder;
        bool hold = oneUsed && _policy.HoldTakenReturns;
        // held buffers go back before anything after them, should holding have been switched off
        if (_heldCount > 0 && !hold) ReturnHeld();
        ushort old = _usedIdx;
        int first = _usedIdx;
        int u = _usedIdx;
        bool wrap = _usedWrap;
        ushort firstFlags = (ushort)(wrap ? PackedAvail | PackedUsed : 0);
        ushort lastId = 0;
        int n = 0;
        bool evict = EvictingTakenLines;
        nuint skip = (nuint)_policy.TakenLineEvictionSkip;
        Span<NativeWindow> ahead = stackalloc NativeWindow[TakeAhead];
        Span<ushort> aheadId = stackalloc ushort[TakeAhead];
        while (n < count)
        {
            // look a few buffers ahead (their descriptors read and translated together) before taking them:
            // one loop taking each buffer straight after its descriptor ran fewer instructions but measured 8 %
            // slower for the front-end on the low level (docs/benchmarks.md, eighth session). Each buffer's
            // first lines are prefetched as soon as it is translated: since line eviction made the front-end
            // faster, on the low level we are the side it waits for (it drops 40 % of the frames it builds on a
            // full ring), and overlapping the eight transfers took 22 % more frames (eleventh session)
            int k = 0, slot = _lastAvail;
            bool availWrap = _availWrap;
            while (k < ahead.Length && n + k < count)
            {
                ushort flags = Volatile.Read(ref _desc.Ref<ushort>((nuint)(slot * 16 + 14)));
                if (!IsAvailable(flags, availWrap) || (flags & (DescNext | DescIndirect)) != 0) break;
                // a buffer the device only reads: a WRITE flag is ignored on such queues, refused elsewhere
                if ((flags & DescWrite) != 0 && !_policy.DeviceReadsOnly) break;
                var d = _desc.Ref<RawDescriptor>((nuint)slot * 16);
                if (d.Len == 0 || d.Len > MaxChainBytes || !TryTranslateFast<TAddr>(_memory, d.Addr, d.Len, false, out ahead[k], out _)) break;
                aheadId[k] = d.Word12;
                ahead[k].Prefetch();
                k++;
                if (++slot == Size)
                {
                    slot = 0;
                    availWrap = !availWrap;
                }
            }
            int took = 0;
            for (; took < k; took++)
            {
                if (!taker.Take(n, ahead[took].Span(0, (int)ahead[took].Length))) break;
                if (evict && ahead[took].Length > skip) ahead[took].Evict(skip, ahead[took].Length - skip);
                lastId = aheadId[took];
                if (!oneUsed)
                {
                    ref var used = ref _desc.Ref<RawDescriptor>((nuint)u * 16);
                    used.Len = 0;
                    used.Word12 = lastId;
                    if (n > 0) Volatile.Write(ref used.Word14, (ushort)(wrap ? PackedAvail | PackedUsed : 0));
                }
                if (++u == Size)
                {
                    u = 0;
                    wrap = !wrap;
                }
                AdvanceAvail(1);
                n++;
            }
            if (took < ahead.Length) break;
        }
        if (n == 0)
        {
            // the ring is dry: whatever is held goes back now
            if (_heldCount > 0) ReturnHeld();
            return 0;
        }
        if (TuningTakenLines) _evictTuner.Count(n);
        _usedIdx = (ushort)u;
        _usedWrap = wrap;
        if (oneUsed)
        {
            // VIRTIO_F_IN_ORDER: one used descriptor with the last buffer's id returns the batch (see FlushPacked),
            // joined to what is held
            if (_heldCount == 0)
            {
                _heldFirst = (ushort)first;
                _heldFlags = firstFlags;
            }
            _heldCount += n;
            _heldLastId = lastId;
            // a Take that got all it asked for means the driver keeps the ring busy, so the return can wait for
            // the next one; anything short of that (the ring ran dry, or a buffer Pop must handle) returns at once
            if (!hold || n < count || _heldCount >= Size - Size / 4) ReturnHeld();
            return n;
        }
        Volatile.Write(ref _desc.Ref<ushort>((nuint)(first * 16 + 14)), firstFlags);
        if (_log != null) LogDescriptors(first, n);
        InterruptIfAskedPacked(old);
        return n;
    }

    /// <summary>Publishes the buffers Take holds (see <see cref="QueuePolicy.HoldTakenReturns"/>) with one used descriptor.</summary>
    private void ReturnHeld()
    {
        ref var used = ref _desc.Ref<RawDescriptor>((nuint)_heldFirst * 16);
        used.Len = 0;
        used.Word12 = _heldLastId;
        Volatile.Write(ref _desc.Ref<ushort>((nuint)(_heldFirst * 16 + 14)), _heldFlags);
        if (_log != null) LogDescriptors(_heldFirst, 1);
        _heldCount = 0;
        InterruptIfAskedPacked(_heldFirst);
    }

    /// <summary>How many staged elements from the start have length 0 (the batch a single descriptor returns).</summary>
    private int BatchableInOrder()
    {
        int i = 0;
        while (i < _staged && _stagedLen[i] == 0) i++;
        return i;
    }

    protected override void SetNotificationsCore(bool enabled)
    {
        if (enabled && EventIdx)
        {
            Volatile.Write(ref _used.Ref<ushort>(0), (ushort)(_lastAvail | (_availWrap ? 0x8000 : 0)));
            Volatile.Write(ref _used.Ref<ushort>(2), EventDesc);
        }
        else
        {
            Volatile.Write(ref _used.Ref<ushort>(2), enabled ? EventEnable : EventDisable);
        }
        if (_log != null) LogUsedArea(0, 4);
    }
}
