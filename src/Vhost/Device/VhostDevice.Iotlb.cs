using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using Vhost.Interop;
using Vhost.Memory;
using Vhost.Protocol;
using Vhost.Rings;

namespace Vhost.Device;

/// <summary>
/// vIOMMU support (VIRTIO_F_ACCESS_PLATFORM): the front-end's VHOST_USER_IOTLB_MSG updates and invalidations of the
/// device's IOTLB, and the misses the data path sends back on the backend channel. Every change is made with
/// every queue's lease held, so the reply (which the guest's vCPU waits for) goes out only once no burst can
/// still use a removed translation.
/// </summary>
public sealed partial class VhostDevice
{
    private IoTlb? _iotlb;
    private long _iotlbRefused;

    /// <summary>The IOTLB while VIRTIO_F_ACCESS_PLATFORM is negotiated (counters: updates, invalidations, misses sent).</summary>
    internal IoTlb? Iotlb => _iotlb;

    /// <summary>IOTLB messages refused (bad fields, unknown type, feature not negotiated).</summary>
    public long IotlbRefused => Interlocked.Read(ref _iotlbRefused);

    /// <summary>VHOST_IOTLB_* message types.</summary>
    private enum IotlbType : byte
    {
        Miss = 1,
        Update = 2,
        Invalidate = 3,
        AccessFail = 4,
    }

    /// <summary>SET_FEATURES: the queues get the IOTLB when ACCESS_PLATFORM is negotiated (called with every lease held).</summary>
    private void ApplyIommuFeature(ulong features)
    {
        bool on = VirtioFeature.Has(features, VirtioFeature.AccessPlatform);
        if (on)
        {
            _iotlb ??= new IoTlb(_options.IotlbCapacity, Math.Max(0, (long)_options.IotlbMissTimeout.TotalMilliseconds));
            IotlbMetrics.Register(this);
            if (!HasProtocolFeature(ProtocolFeature.BackendReq) || !HasProtocolFeature(ProtocolFeature.ReplyAck))
                _logger.LogWarning("device {Id}: VIRTIO_F_ACCESS_PLATFORM without BACKEND_REQ and REPLY_ACK: IOTLB misses cannot be asked for", Id);
        }
        foreach (var q in _queues) q.SetIotlb(on ? _iotlb : null);
    }

    private Outcome IotlbMessage(ReadOnlySpan<byte> p)
    {
        ulong iova = BinaryPrimitives.ReadUInt64LittleEndian(p);
        ulong size = BinaryPrimitives.ReadUInt64LittleEndian(p[8..]);
        ulong uaddr = BinaryPrimitives.ReadUInt64LittleEndian(p[16..]);
        var perm = (IotlbAccess)p[24];
        var type = (IotlbType)p[25];
        if (_iotlb is not { } tlb || !HasFeature(VirtioFeature.AccessPlatform))
            return Refused("IOTLB message without VIRTIO_F_ACCESS_PLATFORM negotiated");
        switch (type)
        {
            case IotlbType.Update:
                if (IoTlb.ValidateUpdate(iova, size, uaddr, perm) is { } bad)
                    return Refused($"IOTLB update of iova 0x{iova:x}: {bad}");
                if (!CoveredByMemory(uaddr, size))
                    return Refused($"IOTLB update of iova 0x{iova:x} (+0x{size:x}) to front-end address 0x{uaddr:x}, which is outside guest memory");
                WithAllQueuesLocked(() =>
                {
                    tlb.Insert(iova, size, uaddr, perm);
                    _logger.LogTrace("device {Id}: IOTLB update 0x{Iova:x} +0x{Size:x} perm {Perm}", Id, iova, size, perm);
                    bool woke = false;
                    foreach (var q in _queues) woke |= WakeAfterUpdate(q);
                    // the queue that missed may not be the one served (net's receive queue is served with its
                    // transmit queue), so every served queue gets a turn
                    if (woke) NudgeServices();
                });
                return Outcome.Ok;
            case IotlbType.Invalidate:
                if (size == 0) return Refused($"IOTLB invalidation of iova 0x{iova:x} with size 0");
                // QEMU's flush-all starts at 0xfef00000 with a size that ends exactly at 2^64: the end is clamped,
                // never wrapped to a small number
                ulong last = iova + (size - 1) < iova ? ulong.MaxValue : iova + (size - 1);
                int removed = 0;
                WithAllQueuesLocked(() =>
                {
                    removed = tlb.Invalidate(iova, size);
                    foreach (var q in _queues)
                    {
                        // the rings rest until their entries come back (their translations go with the entries)
                        if (q.RingsOverlap(iova, last) && q.Remap(Memory) is { } e) q.Fault(e);
                    }
                });
                _logger.LogTrace("device {Id}: IOTLB invalidate 0x{Iova:x}..0x{Last:x}: {Removed} entries", Id, iova, last, removed);
                return Outcome.Ok;
            default:
                return Refused($"IOTLB message of type {(byte)type} (only updates and invalidations come from the front-end)");
        }
    }

    private Outcome Refused(string why)
    {
        Interlocked.Increment(ref _iotlbRefused);
        return Outcome.Fail(why);
    }

    /// <summary>Whether the front-end range [uaddr, uaddr + size) lies in guest memory (regions may follow each other).</summary>
    private bool CoveredByMemory(ulong uaddr, ulong size)
    {
        var memory = Memory;
        while (size > 0)
        {
            GuestMemoryRegion? hit = null;
            foreach (var r in memory.Regions)
            {
                if (uaddr >= r.Info.UserAddr && uaddr - r.Info.UserAddr < r.Info.Size) { hit = r; break; }
            }
            if (hit == null) return false;
            ulong take = Math.Min(size, hit.Info.Size - (uaddr - hit.Info.UserAddr));
            uaddr += take;
            size -= take;
        }
        return true;
    }

    /// <summary>After an update: resting rings try again, and a queue whose lookup missed is kicked so it looks
    /// again; true when the queue was waiting.</summary>
    private static bool WakeAfterUpdate(Virtqueue q)
    {
        bool resting = q.RingsAwaitIotlb;
        if (resting && !q.TryUnpark()) return false;
        if (!q.AwaitingIotlb && !resting) return false;
        q.AwaitingIotlb = false;
        // an application that waits on the kick eventfd itself runs the queue as a guest kick would
        if (q.KickFd is { } kick) EventFd.Signal(kick);
        return true;
    }

    void IGuestNotifier.IotlbMiss(Virtqueue queue, ulong iova, IotlbAccess access)
    {
        if (_backendChannel is not { } channel || !HasProtocolFeature(ProtocolFeature.BackendReq))
        {
            _logger.LogWarning("device {Id}: queue {Queue}: IOTLB miss for iova 0x{Iova:x} but no backend channel to ask on", Id, queue.Index, iova);
            return;
        }
        Span<byte> msg = stackalloc byte[MessageHeader.Length + Payload.IotlbPadded];
        msg.Clear();
        new MessageHeader((uint)VhostUserBackendRequest.IotlbMsg, MessageHeader.Version, Payload.IotlbPadded).Write(msg);
        var p = msg[MessageHeader.Length..];
        BinaryPrimitives.WriteUInt64LittleEndian(p, iova);
        p[24] = (byte)access;
        p[25] = (byte)IotlbType.Miss;
        try
        {
            channel.Send(msg);
            _logger.LogTrace("device {Id}: queue {Queue}: IOTLB miss 0x{Iova:x} {Access} sent", Id, queue.Index, iova, access);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            _logger.LogWarning("device {Id}: IOTLB miss for iova 0x{Iova:x} not sent: {Error}", Id, iova, e.Message);
        }
    }

    /// <summary>A reset or a disconnect: the translations go with the queues (called with every lease held).</summary>
    private void ClearIotlb()
    {
        _iotlb?.Clear();
        foreach (var q in _queues) q.SetIotlb(null);
    }
}
