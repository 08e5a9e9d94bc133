using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using Vhost.Interop;

namespace Vhost.Rings;

/// <summary>
/// Packed ring: one descriptor ring shared by driver and device. A slot is available when its AVAIL bit
/// equals the driver's wrap counter and its USED bit does not; the device marks it used by making both
/// bits equal its own wrap counter.
/// </summary>
public sealed partial class Virtqueue
{
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

    private int PopPacked(Span<DescriptorChain> chains, Span<BufferSegment> segments)
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
            var r = WalkPacked(segments[used..], ref chain, ref reason, out int slots, out ushort id);
            if (Faulted) return n;
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
    private Walk WalkPacked(Span<BufferSegment> segments, ref DescriptorChain chain, ref string? reason, out int slots, out ushort id)
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
            ushort flags = BinaryPrimitives.ReadUInt16LittleEndian(d[14..]);
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
        if (!_memory.TryTranslate(addr, len, out NativeWindow table))
            return BadReason(ref reason, $"indirect table 0x{addr:x} (+{len}) is not inside one guest memory region");
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

    private void FlushPacked()
    {
        ushort old = _usedIdx;
        int firstIdx = _usedIdx;
        ushort firstFlags = 0;
        int u = _usedIdx;
        bool wrap = _usedWrap;
        int singles = BatchInOrderUsed && InOrder && !_stagedOutOfOrder ? BatchableInOrder() : 0;
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
            int oldIdx = old;
            if (newIdx <= oldIdx) oldIdx -= Size;
            if (((offWrap >> 15) != 0) != _usedWrap) off -= Size;
            interrupt = (ushort)(newIdx - off - 1) < (ushort)(newIdx - oldIdx);
        }
        _signalledUsed = _usedIdx;
        if (interrupt) Interrupt();
    }

    /// <summary>The packed ring's form of <see cref="Fill"/>.</summary>
    private int FillPacked<TFiller>(ref TFiller filler, int count) where TFiller : IBufferFiller, allows ref struct
    {
        ushort old = _usedIdx;
        int first = _usedIdx;
        ushort firstFlags = 0;
        bool headDeferred = false;
        int u = _usedIdx;
        bool wrap = _usedWrap;
        int n = 0;
        while (n < count)
        {
            if (count - n >= 4 && u == _lastAvail && (u & 3) == 0 && u + 4 <= Size && FillPackedLine(ref filler, n, wrap))
            {
                // four at once, published at once: one cache line of the ring changes hands once
                n += 4;
                u += 4;
                if (u == Size)
                {
                    u = 0;
                    wrap = !wrap;
                }
                AdvanceAvail(4);
                continue;
            }
            int need = filler.Needed(n);
            if (!FillableAt(_lastAvail, need, out var w, out ushort id)) break;
            filler.Fill(n, w.Span(0, need));
            // the used descriptor goes where the device's used index is; its slot was consumed before
            ref var used = ref _desc.Ref<RawDescriptor>((nuint)u * 16);
            used.Len = (uint)need;
            used.Word12 = id;
            ushort usedFlags = (ushort)((wrap ? PackedAvail | PackedUsed : 0) | DescWrite);
            // the first single of a call is published last, so the driver sees the call's work at once
            if (n == 0)
            {
                firstFlags = usedFlags;
                headDeferred = true;
            }
            else
            {
                Volatile.Write(ref used.Word14, usedFlags);
            }
            if (++u == Size)
            {
                u = 0;
                wrap = !wrap;
            }
            AdvanceAvail(1);
            n++;
        }
        if (n == 0) return 0;
        if (headDeferred) Volatile.Write(ref _desc.Ref<ushort>((nuint)(first * 16 + 14)), firstFlags);
        _usedIdx = (ushort)u;
        _usedWrap = wrap;
        InterruptIfAskedPacked(old);
        return n;
    }

    /// <summary>The packed ring's form of <see cref="Take"/>; with VIRTIO_F_IN_ORDER and <see cref="BatchInOrderUsed"/> one used descriptor returns them all.</summary>
    private int TakePacked<TTaker>(ref TTaker taker, int count) where TTaker : IBufferTaker, allows ref struct
    {
        bool oneUsed = BatchInOrderUsed && InOrder;
        ushort old = _usedIdx;
        int first = _usedIdx;
        int u = _usedIdx;
        bool wrap = _usedWrap;
        ushort firstFlags = (ushort)(wrap ? PackedAvail | PackedUsed : 0);
        ushort lastId = 0;
        int n = 0;
        Span<NativeWindow> ahead = stackalloc NativeWindow[TakeAhead];
        Span<ushort> aheadId = stackalloc ushort[TakeAhead];
        while (n < count)
        {
            // look a few buffers ahead and ask for their lines together: each is a read of memory the
            // front-end's core just wrote, and one at a time they would wait for each other
            int k = 0, slot = _lastAvail;
            bool availWrap = _availWrap;
            while (k < ahead.Length && n + k < count)
            {
                ushort flags = Volatile.Read(ref _desc.Ref<ushort>((nuint)(slot * 16 + 14)));
                if (!IsAvailable(flags, availWrap) || (flags & (DescNext | DescIndirect)) != 0) break;
                // a buffer the device only reads: a WRITE flag is ignored on such queues, refused elsewhere
                if ((flags & DescWrite) != 0 && !DeviceReadsOnly) break;
                var d = _desc.Ref<RawDescriptor>((nuint)slot * 16);
                if (d.Len == 0 || d.Len > MaxChainBytes || !_memory.TryTranslate(d.Addr, d.Len, out ahead[k])) break;
                ahead[k].Prefetch();
                aheadId[k] = d.Word12;
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
        if (n == 0) return 0;
        if (oneUsed)
        {
            // VIRTIO_F_IN_ORDER: one used descriptor with the last buffer's id returns the batch (see FlushPacked)
            ref var used = ref _desc.Ref<RawDescriptor>((nuint)first * 16);
            used.Len = 0;
            used.Word12 = lastId;
        }
        Volatile.Write(ref _desc.Ref<ushort>((nuint)(first * 16 + 14)), firstFlags);
        _usedIdx = (ushort)u;
        _usedWrap = wrap;
        InterruptIfAskedPacked(old);
        return n;
    }

    /// <summary>
    /// Whether ring slot <paramref name="slot"/> (in the driver's current lap) holds an available
    /// one-descriptor writable buffer that <paramref name="need"/> bytes fit, and where it is.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool FillableAt(int slot, int need, out NativeWindow buffer, out ushort id)
    {
        buffer = default;
        id = 0;
        // acquire: the driver writes the flags last; the rest of the descriptor is read after them
        ushort flags = Volatile.Read(ref _desc.Ref<ushort>((nuint)(slot * 16 + 14)));
        if (need <= 0 || !IsAvailable(flags, _availWrap) || (flags & (DescNext | DescIndirect | DescWrite)) != DescWrite) return false;
        var d = _desc.Ref<RawDescriptor>((nuint)slot * 16);
        id = d.Word12;
        return d.Len >= (uint)need && d.Len <= MaxChainBytes && _memory.TryTranslate(d.Addr, d.Len, out buffer);
    }

    /// <summary>
    /// Items <paramref name="n"/>..n+3 into the four one-descriptor buffers of the ring line at _lastAvail
    /// (aligned, and the used index is there too), if all four qualify; else nothing is touched. DPDK's
    /// virtio_dev_rx_batch_packed has this shape: the driver refills and reads the ring a line at a time.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool FillPackedLine<TFiller>(ref TFiller filler, int n, bool wrap) where TFiller : IBufferFiller, allows ref struct
    {
        nuint at = (nuint)_lastAvail * 16;
        // fixed-size locals rather than stackalloc: the JIT does not inline a method that stackallocs
        var windows = new LineOf<NativeWindow>();
        var needs = new LineOf<int>();
        Span<NativeWindow> w = windows;
        Span<int> need = needs;
        for (int i = 0; i < 4; i++)
        {
            need[i] = filler.Needed(n + i);
            if (!FillableAt(_lastAvail + i, need[i], out w[i], out _)) return false;
        }
        for (int i = 0; i < 4; i++) filler.Fill(n + i, w[i].Span(0, need[i]));
        // the buffer ids stay where the driver put them: used slot and avail slot are the same here
        for (int i = 0; i < 4; i++) _desc.Ref<RawDescriptor>(at + (nuint)i * 16).Len = (uint)need[i];
        ushort usedFlags = (ushort)((wrap ? PackedAvail | PackedUsed : 0) | DescWrite);
        for (nuint i = 0; i < 4; i++) Volatile.Write(ref _desc.Ref<ushort>(at + i * 16 + 14), usedFlags);
        return true;
    }

    /// <summary>
    /// Whether a flush may return a batch of zero-length, in-order chains with one used descriptor. The
    /// device library sets it for queues whose chains it always completes in the order it popped them
    /// (Vhost.Net's transmit queues); it takes effect only when VIRTIO_F_IN_ORDER was negotiated.
    /// </summary>
    public bool BatchInOrderUsed { get; set; }

    /// <summary>How many staged elements from the start have length 0 (the batch a single descriptor returns).</summary>
    private int BatchableInOrder()
    {
        int i = 0;
        while (i < _staged && _stagedLen[i] == 0) i++;
        return i;
    }

    private void SetPackedNotifications(bool enabled)
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
    }

    /// <summary>Four of a kind, one per descriptor of a ring line.</summary>
    [InlineArray(4)]
    private struct LineOf<T>
    {
        private T _item;
    }
}
