using System.Runtime.CompilerServices;
using Vhost.Interop;
using Vhost.Memory;

namespace Vhost.Rings;

/// <summary>
/// Descriptor addresses under a vIOMMU (VIRTIO_F_ACCESS_PLATFORM): every address is an IOVA, translated through
/// the device's IOTLB to a front-end address and then through the memory table, with the entry's permission
/// checked. The IOTLB changes only with the lease held by the control plane, so within a burst it is stable. A
/// lookup that finds no entry asks the front-end (a miss on the backend channel) and leaves the chain in the ring;
/// the update wakes the queue. A page whose miss has gone unanswered for <see cref="IoTlb.MissGiveUpMilliseconds"/> is
/// treated as unmapped: its chain is returned to the guest unused and counted.
/// </summary>
internal abstract partial class RingEngine
{
    protected IoTlb? _iotlb;
    private long _iotlbHits, _iotlbMisses;

    /// <summary>IOTLB lookups that found their entry (this queue's).</summary>
    internal long IotlbHits => Interlocked.Read(ref _iotlbHits);

    /// <summary>IOTLB lookups that found none (this queue's).</summary>
    internal long IotlbMisses => Interlocked.Read(ref _iotlbMisses);

    private static IotlbAccess Need(bool writable) => writable ? IotlbAccess.Write : IotlbAccess.Read;

    /// <summary>Whether a fast path is instantiated for IOVAs (a vIOMMU) or guest-physical addresses: a constant per instantiation.</summary>
    internal interface IAddressMode
    {
        static abstract bool Iova { get; }
    }

    internal struct PhysicalAddresses : IAddressMode
    {
        public static bool Iova => false;
    }

    internal struct IoVirtualAddresses : IAddressMode
    {
        public static bool Iova => true;
    }

    /// <summary>The fast paths' lookup of a whole buffer in either address space; false leaves the buffer to the general walk.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected bool TryTranslateFast<TAddr>(GuestMemory memory, ulong addr, ulong len, bool writable, out NativeWindow w, out ulong gpa)
        where TAddr : struct, IAddressMode
    {
        if (!TAddr.Iova)
        {
            gpa = addr;
            return memory.TryTranslate(addr, len, out w);
        }
        return TryTranslateIovaWhole(addr, len, writable, out w, out gpa);
    }

    /// <summary>The fast path's lookup: the whole buffer in one front-end piece, or false with nothing counted but
    /// the hit (the general walk then reports a miss or a fault).</summary>
    protected bool TryTranslateIovaWhole(ulong iova, ulong len, bool writable, out NativeWindow w, out ulong gpa)
    {
        if (_iotlb!.Translate(iova, len, Need(writable), out ulong uva, out _, out _) == len
            && _memory.TryTranslateUserAddress(uva, len, out w, out gpa))
        {
            _iotlbHits++;
            return true;
        }
        w = default;
        gpa = 0;
        return false;
    }

    /// <summary>One buffer as segments: one per run of IOTLB entries that is contiguous in front-end memory.</summary>
    protected Walk AddIovaPieces(ulong iova, uint len, bool writable, Span<BufferSegment> segments, ref DescriptorChain chain, ref string? reason)
    {
        var need = Need(writable);
        int at = chain.SegmentCount;
        ulong left = len;
        while (left > 0)
        {
            ulong got = _iotlb!.Translate(iova, left, need, out ulong uva, out _, out bool denied);
            if (got == 0) return denied ? Denied(iova, need, ref reason) : Miss(iova, need, ref reason);
            if (!_memory.TryTranslateUserAddress(uva, got, out var w, out ulong gpa))
            {
                reason = $"IOVA 0x{iova:x} maps to front-end address 0x{uva:x} (+{got}), which is not inside one region of guest memory";
                return Walk.Bad;
            }
            if (at >= segments.Length) return Walk.NoRoom;
            _iotlbHits++;
            if (!writable) w.Prefetch();
            segments[at++] = new BufferSegment { Window = w, GuestAddress = gpa, IsWritable = writable };
            iova += got;
            left -= got;
        }
        chain.SegmentCount = at;
        return Walk.Ok;
    }

    /// <summary>A table the device reads whole (an indirect table): one contiguous front-end piece.</summary>
    protected Walk TranslateTable(ulong addr, uint len, out NativeWindow table, ref string? reason)
    {
        if (_iotlb == null)
        {
            if (_memory.TryTranslate(addr, len, out table)) return Walk.Ok;
            reason = $"indirect table 0x{addr:x} (+{len}) is not inside one guest memory region";
            return Walk.Bad;
        }
        table = default;
        ulong got = _iotlb.Translate(addr, len, IotlbAccess.Read, out ulong uva, out ulong missAt, out bool denied);
        if (got == 0) return denied ? Denied(addr, IotlbAccess.Read, ref reason) : Miss(addr, IotlbAccess.Read, ref reason);
        if (got < len)
        {
            // the rest is either not known yet (ask for it) or lies elsewhere in front-end memory (refused)
            if (_iotlb.Translate(missAt, 1, IotlbAccess.Read, out _, out _, out bool d2) == 0 && !d2)
                return Miss(missAt, IotlbAccess.Read, ref reason);
            reason = $"indirect table at IOVA 0x{addr:x} (+{len}) is not contiguous in front-end memory";
            return Walk.Bad;
        }
        if (!_memory.TryTranslateUserAddress(uva, len, out table, out _))
        {
            reason = $"indirect table at IOVA 0x{addr:x} maps to front-end address 0x{uva:x} (+{len}), outside guest memory";
            return Walk.Bad;
        }
        _iotlbHits++;
        return Walk.Ok;
    }

    private Walk Denied(ulong iova, IotlbAccess need, ref string? reason)
    {
        reason = $"IOVA 0x{iova:x} is mapped without {(need == IotlbAccess.Write ? "write" : "read")} permission";
        return Walk.Bad;
    }

    private Walk Miss(ulong iova, IotlbAccess need, ref string? reason)
    {
        _iotlbMisses++;
        long now = Environment.TickCount64;
        long giveUp = _iotlb!.MissGiveUpMilliseconds;
        if (_iotlb.PendingSince(iova, need) is { } since && now - since >= giveUp)
        {
            _iotlb.ForgetMiss(iova, need);
            reason = $"IOVA 0x{iova:x}: the front-end sent no IOTLB update within {giveUp} ms";
            return Walk.Bad;
        }
        if (_iotlb.NoteMiss(iova, need, now)) Q.SendIotlbMiss(iova, need);
        Q.AwaitingIotlb = true;
        return Walk.Miss;
    }
}
