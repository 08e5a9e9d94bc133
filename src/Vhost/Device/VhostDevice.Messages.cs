using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using Vhost.Interop;
using Vhost.Memory;
using Vhost.Protocol;
using Vhost.Rings;

namespace Vhost.Device;

internal enum OutcomeKind
{
    Ok,
    /// <summary>The request was refused; the front-end hears it through REPLY_ACK, or the connection closes.</summary>
    Failed,
    /// <summary>The connection cannot go on.</summary>
    Close,
    /// <summary>The reply waits for work in flight (GET_VRING_BASE); the connection reads nothing until it is sent.</summary>
    Pending,
}

internal readonly record struct Outcome(OutcomeKind Kind, string? Error = null)
{
    public static readonly Outcome Ok = new(OutcomeKind.Ok);

    public static Outcome Fail(string error) => new(OutcomeKind.Failed, error);

    public static Outcome Close(string error) => new(OutcomeKind.Close, error);

    public static readonly Outcome Pending = new(OutcomeKind.Pending);
}

/// <summary>The reply payload a handler writes.</summary>
internal sealed class ReplyBuffer
{
    public byte[] Data { get; } = new byte[MessageHeader.MaxPayload];

    public int Length { get; private set; }

    /// <summary>An fd to send with the reply (GET_INFLIGHT_FD); the connection disposes it after sending.</summary>
    public SafeFd? Fd { get; set; }

    /// <summary>Send this reply although the request table lists none (postcopy's memory replies and LISTEN's ack).</summary>
    public bool Forced { get; set; }

    public void Clear()
    {
        Length = 0;
        Forced = false;
        Fd?.Dispose();
        Fd = null;
    }

    public void U64(ulong v)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(Data, v);
        Length = 8;
    }

    public void VringState(uint index, uint num)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(Data, index);
        BinaryPrimitives.WriteUInt32LittleEndian(Data.AsSpan(4), num);
        Length = 8;
    }

    public Span<byte> Reserve(int length)
    {
        Length = length;
        return Data.AsSpan(0, length);
    }
}

/// <summary>The message handlers: one per request, each validating before it touches state.</summary>
public sealed partial class VhostDevice
{
    /// <summary>Takes ownership of fds[i] (the connection disposes the rest).</summary>
    private static SafeFd Take(List<SafeFd?> fds, int i)
    {
        var fd = fds[i]!;
        fds[i] = null;
        return fd;
    }

    internal Outcome Handle(in MessageHeader header, ReadOnlySpan<byte> p, List<SafeFd?> fds, ReplyBuffer reply)
    {
        var request = (VhostUserRequest)header.Request;
        if (PostcopyOrderCheck(request) is { } outOfOrder) return outOfOrder;
        switch (request)
        {
            case VhostUserRequest.GetFeatures:
                reply.U64(OfferedFeatures);
                return Outcome.Ok;
            case VhostUserRequest.SetFeatures:
                return SetFeatures(Payload.ReadU64(p));
            case VhostUserRequest.SetOwner:
                return Outcome.Ok;
            case VhostUserRequest.ResetOwner:
                ResetState("RESET_OWNER");
                return Outcome.Ok;
            case VhostUserRequest.ResetDevice:
                ResetState("RESET_DEVICE");
                return Outcome.Ok;
            case VhostUserRequest.GetProtocolFeatures:
                if (!VirtioFeature.Has(OfferedFeatures, VirtioFeature.ProtocolFeatures))
                    return Outcome.Close("GET_PROTOCOL_FEATURES without VHOST_USER_F_PROTOCOL_FEATURES offered");
                reply.U64(_options.ProtocolFeatures);
                return Outcome.Ok;
            case VhostUserRequest.SetProtocolFeatures:
                return SetProtocolFeatures(Payload.ReadU64(p));
            case VhostUserRequest.GetQueueNum:
                reply.U64((ulong)(_options.QueueNumReply ?? _options.MaxQueues));
                return Outcome.Ok;
            case VhostUserRequest.GetMaxMemSlots:
                reply.U64((ulong)_options.MaxMemorySlots);
                return Outcome.Ok;
            case VhostUserRequest.SetMemTable:
                return SetMemTable(p, fds, reply);
            case VhostUserRequest.AddMemReg:
                return Postcopy == PostcopyPhase.Listening
                    ? AddMemoryRegionPostcopy(p, Payload.ReadRegion(p[8..]), Take(fds, 0), reply)
                    : AddMemoryRegion(Payload.ReadRegion(p[8..]), Take(fds, 0));
            case VhostUserRequest.RemMemReg:
                return RemoveMemoryRegion(Payload.ReadRegion(p[8..]));
            case VhostUserRequest.SetVringNum:
                return SetVringNum(p);
            case VhostUserRequest.SetVringAddr:
                return SetVringAddr(Payload.ReadVringAddress(p));
            case VhostUserRequest.SetVringBase:
                return SetVringBase(p);
            case VhostUserRequest.GetVringBase:
                return GetVringBase(p, reply);
            case VhostUserRequest.SetVringKick:
            case VhostUserRequest.SetVringCall:
            case VhostUserRequest.SetVringErr:
                return SetVringFd(request, Payload.ReadU64(p), fds);
            case VhostUserRequest.SetVringEnable:
                return SetVringEnable(p);
            case VhostUserRequest.VringKick:
                return InbandKick(p);
            case VhostUserRequest.SetStatus:
                return SetStatus(Payload.ReadU64(p));
            case VhostUserRequest.GetStatus:
                reply.U64((ulong)Status);
                return Outcome.Ok;
            case VhostUserRequest.GetConfig:
                return GetConfig(p, reply);
            case VhostUserRequest.SetConfig:
                return SetConfig(p);
            case VhostUserRequest.SetBackendReqFd:
                if (!HasProtocolFeature(ProtocolFeature.BackendReq))
                    return Outcome.Fail("SET_BACKEND_REQ_FD without VHOST_USER_PROTOCOL_F_BACKEND_REQ");
                return SetBackendChannel(Take(fds, 0));
            case VhostUserRequest.IotlbMsg:
                return IotlbMessage(p);
            case VhostUserRequest.SendRarp:
                return SendRarp(Payload.ReadU64(p));
            case VhostUserRequest.NetSetMtu:
                return SetMtu(Payload.ReadU64(p));
            case VhostUserRequest.SetLogBase:
                return SetLogBase(p, fds);
            case VhostUserRequest.SetLogFd:
                // an eventfd for log syncs the front-end may wait on: we mark bits as we go and never need it
                Take(fds, 0).Dispose();
                return Outcome.Ok;
            case VhostUserRequest.GetInflightFd:
                return GetInflightFd(p, reply);
            case VhostUserRequest.SetInflightFd:
                return SetInflightFd(p, fds);
            case VhostUserRequest.CreateCryptoSession:
                return CreateCryptoSession(p, reply);
            case VhostUserRequest.CloseCryptoSession:
                return CloseCryptoSession(Payload.ReadU64(p));
            case VhostUserRequest.PostcopyAdvise:
                return PostcopyAdvise(reply);
            case VhostUserRequest.PostcopyListen:
                return PostcopyListen(header, reply);
            case VhostUserRequest.PostcopyEnd:
                return PostcopyEnd(reply);
            default:
                if (ExtensionHandler is { } ext && ext(this, header, p, fds, reply) is { } o) return o;
                return Outcome.Fail($"{request} is not supported by this back-end");
        }
    }

    /// <summary>Hook through which later features (dirty log, IOTLB, inflight) claim their requests.</summary>
    internal static Func<VhostDevice, MessageHeader, ReadOnlySpan<byte>, List<SafeFd?>, ReplyBuffer, Outcome?>? ExtensionHandler { get; set; }

    private ulong OfferedFeatures => _options.Features;

    private bool ValidQueue(uint index, out Virtqueue queue, out Outcome error)
    {
        if (index >= (uint)_queues.Length)
        {
            queue = null!;
            error = Outcome.Close($"queue index {index} out of range (this device has {_queues.Length})");
            return false;
        }
        queue = _queues[index];
        error = default;
        return true;
    }

    private Outcome SetFeatures(ulong features)
    {
        ulong unknown = features & ~OfferedFeatures;
        if (unknown != 0) return Outcome.Fail($"SET_FEATURES 0x{features:x} has bits never offered: 0x{unknown:x}");
        if (_running)
        {
            if (features == Features) return Outcome.Ok;
            ulong changed = features ^ Features;
            if ((changed & ~(1UL << VirtioFeature.LogAll)) != 0)
                return Outcome.Fail($"SET_FEATURES changes 0x{changed:x} while the device runs");
            Features = features;
            LogAllChanged(VirtioFeature.Has(features, VirtioFeature.LogAll));
            if (_ops is { } ops) Callback("FeaturesChanged", () => ops.FeaturesChanged(this, features));
            return Outcome.Ok;
        }
        if (_resetPending)
        {
            // the set-up after SET_STATUS 0: the reset it asked for happens now, before the new features apply
            ResetState("SET_STATUS 0, then a new set-up");
        }
        bool packedChanged = FeaturesSet && ((features ^ Features) & (1UL << VirtioFeature.RingPacked)) != 0;
        bool logChanged = ((features ^ Features) & (1UL << VirtioFeature.LogAll)) != 0;
        Features = features;
        FeaturesSet = true;
        WithAllQueuesLocked(() =>
        {
            ApplyIommuFeature(features);
            foreach (var q in _queues)
            {
                q.SetFeatures(features);
                if (packedChanged && q.Size > 0 && Virtqueue.ValidateSize((uint)q.Size, q.IsPacked) is { } e)
                    _logger.LogWarning("queue {Queue}: {Error} after the ring format changed", q.Index, e);
            }
        });
        if (logChanged) LogAllChanged(VirtioFeature.Has(features, VirtioFeature.LogAll));
        _logger.LogDebug("device {Id}: features 0x{Features:x}", Id, features);
        return Outcome.Ok;
    }

    private Outcome SetProtocolFeatures(ulong features)
    {
        ulong unknown = features & ~_options.ProtocolFeatures;
        if (unknown != 0) return Outcome.Fail($"SET_PROTOCOL_FEATURES 0x{features:x} has bits never offered: 0x{unknown:x}");
        ProtocolFeatures = features;
        return Outcome.Ok;
    }

    private Outcome SetMemTable(ReadOnlySpan<byte> p, List<SafeFd?> fds, ReplyBuffer reply)
    {
        uint n = BinaryPrimitives.ReadUInt32LittleEndian(p);
        if (n == 0) return Outcome.Fail("SET_MEM_TABLE with no regions");
        if (n > Payload.MaxMemoryTableRegions) return Outcome.Close($"SET_MEM_TABLE with {n} regions (at most {Payload.MaxMemoryTableRegions})");
        if (n > _options.MaxMemorySlots) return Outcome.Fail($"SET_MEM_TABLE with {n} regions but {_options.MaxMemorySlots} slots");
        int needed = Payload.MemoryTableHeader + (int)n * Payload.MemoryRegion;
        if (p.Length < needed) return Outcome.Close($"SET_MEM_TABLE payload of {p.Length} bytes cannot hold {n} regions");
        if (fds.Count != n) return Outcome.Close($"SET_MEM_TABLE describes {n} regions but carries {fds.Count} fds");

        // (in postcopy the front-end waits for our reply to every table)
        if (Postcopy != PostcopyPhase.Listening && SameTable(p, (int)n))
        {
            // QEMU resends an unchanged table often; remapping would stop the device for nothing
            _logger.LogDebug("device {Id}: memory table unchanged", Id);
            return Outcome.Ok;
        }
        var mapped = new List<GuestMemoryRegion>((int)n);
        for (int i = 0; i < n; i++)
        {
            var info = Payload.ReadRegion(p.Slice(Payload.MemoryTableHeader + i * Payload.MemoryRegion));
            var region = GuestMemoryRegion.TryMap(info, fds[i]!, out var error, _logger);
            if (region == null)
            {
                foreach (var r in mapped) r.Dispose();
                return Outcome.Fail($"memory region {i} [{info}]: {error}");
            }
            fds[i] = null;
            WatchForShrinking(region);
            mapped.Add(region);
        }
        if (Postcopy == PostcopyPhase.Listening) return SetMemTablePostcopy(p, mapped, reply);
        var table = GuestMemory.TryCreate(mapped, out var overlap);
        // the generation holds the regions now (or nobody does and they are unmapped)
        foreach (var r in mapped) r.Dispose();
        if (table == null) return Outcome.Fail(overlap!);
        // the application must stop touching the old memory before it goes (as DPDK does)
        StopRunning("memory table changed");
        string? ringError = Publish(table);
        _logger.LogDebug("device {Id}: memory table of {Count} regions", Id, n);
        return ringError == null ? Outcome.Ok : Outcome.Fail(ringError);
    }

    /// <summary>A front-end that shrinks a region's file after we mapped it loses the device, not the process.</summary>
    private void WatchForShrinking(GuestMemoryRegion region)
    {
        var info = region.Info;
        region.Faulted = () => Fault($"memory region [{info}] shrank under its mapping (its fd was truncated); " +
            "the pages touched past its new end read as zeros");
    }

    private bool SameTable(ReadOnlySpan<byte> p, int n)
    {
        var regions = Memory.Regions;
        if (regions.Count != n) return false;
        for (int i = 0; i < n; i++)
        {
            var info = Payload.ReadRegion(p.Slice(Payload.MemoryTableHeader + i * Payload.MemoryRegion));
            if (regions[i].Info != info) return false;
        }
        return true;
    }

    /// <summary>ADD_MEM_REG's slot check and mapping (the normal and the postcopy path); null with the refusal. Takes the fd.</summary>
    private GuestMemoryRegion? MapAddedRegion(in MemoryRegionInfo info, SafeFd fd, int slotsUsed, out Outcome refusal)
    {
        refusal = Outcome.Ok;
        if (slotsUsed >= _options.MaxMemorySlots)
        {
            fd.Dispose();
            refusal = Outcome.Fail($"ADD_MEM_REG beyond the {_options.MaxMemorySlots} memory slots");
            return null;
        }
        var region = GuestMemoryRegion.TryMap(info, fd, out var error, _logger);
        if (region == null)
        {
            fd.Dispose();
            refusal = Outcome.Fail($"ADD_MEM_REG [{info}]: {error}");
            return null;
        }
        WatchForShrinking(region);
        return region;
    }

    private Outcome AddMemoryRegion(MemoryRegionInfo info, SafeFd fd)
    {
        if (MapAddedRegion(info, fd, Memory.Count, out var refusal) is not { } region) return refusal;
        var table = GuestMemory.TryCreate(Memory.Regions.Append(region), out var error);
        region.Dispose();
        if (table == null) return Outcome.Fail($"ADD_MEM_REG [{info}]: {error}");
        if (Publish(table) is { } e) _logger.LogWarning("device {Id}: {Error}", Id, e);
        return Outcome.Ok;
    }

    private Outcome RemoveMemoryRegion(MemoryRegionInfo info)
    {
        GuestMemoryRegion? region = null;
        foreach (var r in Memory.Regions)
        {
            if (r.Info.GuestPhysAddr == info.GuestPhysAddr && r.Info.Size == info.Size) region = r;
        }
        if (region == null) return Outcome.Fail($"REM_MEM_REG [{info}]: no such region");
        foreach (var q in _queues)
        {
            if (q.Started && q.Address is { } a && RingsInside(a, region.Info))
                return Outcome.Fail($"REM_MEM_REG [{info}]: queue {q.Index} has its rings there");
        }
        // work in flight on the old generation keeps the region mapped until it completes
        var table = GuestMemory.TryCreate(Memory.Regions.Where(r => r != region), out _)!;
        if (Publish(table) is { } e) _logger.LogWarning("device {Id}: {Error}", Id, e);
        return Outcome.Ok;
    }

    private static bool RingsInside(VringAddress a, MemoryRegionInfo r)
    {
        bool In(ulong uva) => uva >= r.UserAddr && uva - r.UserAddr < r.Size;
        return In(a.DescUserAddr) || In(a.AvailUserAddr) || In(a.UsedUserAddr);
    }

    /// <summary>
    /// Publishes a new memory generation with every queue quiesced (no burst runs), moves the running rings onto
    /// it, then retires the old one: its regions are unmapped once off-thread work holding it has ended.
    /// Returns the first ring that could not be moved.
    /// </summary>
    private string? Publish(GuestMemory table)
    {
        string? ringError = null;
        GuestMemory old = Memory;
        WithAllQueuesLocked(() =>
        {
            Memory = table;
            foreach (var q in _queues)
            {
                if (q.Remap(table) is { } e) ringError ??= $"queue {q.Index}: {e}";
            }
        });
        old.Release();
        return ringError;
    }

    private Outcome SetVringNum(ReadOnlySpan<byte> p)
    {
        var (index, num) = Payload.ReadVringState(p);
        if (!ValidQueue(index, out var q, out var err)) return err;
        if (q.Started) return Outcome.Fail($"SET_VRING_NUM for queue {index} while it runs");
        string? error;
        using (q.AccessLock.EnterScope()) error = q.SetSize(num);
        return error == null ? Outcome.Ok : Outcome.Fail($"queue {index}: {error}");
    }

    private Outcome SetVringAddr(VringAddress address)
    {
        if (!ValidQueue(address.Index, out var q, out var err)) return err;
        string? error = null;
        using (q.AccessLock.EnterScope())
        {
            q.SetAddress(address);
            // a running ring gets new addresses when logging starts: translate again at once
            if (q.Started) error = q.Remap(Memory);
        }
        return error == null ? Outcome.Ok : Outcome.Fail($"queue {address.Index}: {error}");
    }

    private Outcome SetVringBase(ReadOnlySpan<byte> p)
    {
        var (index, num) = Payload.ReadVringState(p);
        if (!ValidQueue(index, out var q, out var err)) return err;
        if (q.Started) return Outcome.Fail($"SET_VRING_BASE for queue {index} while it runs");
        string? error;
        using (q.AccessLock.EnterScope()) error = q.SetBase(num);
        return error == null ? Outcome.Ok : Outcome.Fail($"queue {index}: {error}");
    }

    private Outcome GetVringBase(ReadOnlySpan<byte> p, ReplyBuffer reply)
    {
        var (index, _) = Payload.ReadVringState(p);
        if (!ValidQueue(index, out var q, out var err)) return err;
        // the front-end stops a ring: the application must let go of the device first (DPDK does the same)
        StopRunning($"GET_VRING_BASE stopped queue {index}");
        // the base is final only once the work in flight has completed and its used elements are out
        q.BeginDrain();
        if (q.WorkInFlight > 0)
        {
            BeginPendingStop((int)index);
            return Outcome.Pending;
        }
        reply.VringState(index, StopQueue(q));
        return Outcome.Ok;
    }

    /// <summary>Stops a drained queue and drops its kick and call fds; returns the base to report.</summary>
    private uint StopQueue(Virtqueue q)
    {
        uint b;
        UnwatchKick(q.Index);
        using (q.AccessLock.EnterScope())
        {
            b = q.Stop();
            q.SetKick(null, false);
            q.SetCall(null, false);
        }
        return b;
    }

    private Outcome SetVringFd(VhostUserRequest request, ulong value, List<SafeFd?> fds)
    {
        uint index = (uint)(value & Payload.VringIndexMask);
        bool noFd = (value & Payload.VringNoFdFlag) != 0;
        if ((value & ~(Payload.VringIndexMask | Payload.VringNoFdFlag)) != 0)
            return Outcome.Close($"{request} payload 0x{value:x} has unknown bits");
        if (noFd && fds.Count != 0) return Outcome.Close($"{request} says no fd but carries {fds.Count}");
        if (!noFd && fds.Count != 1) return Outcome.Close($"{request} needs one fd and carries {fds.Count}");
        if (!ValidQueue(index, out var q, out var err)) return err;
        SafeFd? fd = noFd ? null : Take(fds, 0);
        // only an eventfd cannot stall us (a pipe or a socket can), and only a non-blocking one never does
        if (fd != null && (!FileDescriptors.IsEventFd(fd) || !FileDescriptors.SetNonBlocking(fd)))
        {
            fd.Dispose();
            return Outcome.Fail($"{request} for queue {index}: the fd is not an eventfd");
        }
        switch (request)
        {
            case VhostUserRequest.SetVringCall:
                using (q.AccessLock.EnterScope()) q.SetCall(fd, noFd);
                return Outcome.Ok;
            case VhostUserRequest.SetVringErr:
                using (q.AccessLock.EnterScope()) q.SetErr(fd);
                return Outcome.Ok;
        }
        // SET_VRING_KICK starts the ring. With no fd, in-band kicks (VRING_KICK) go to a private eventfd
        // so event-driven back-ends wait the same way in both modes.
        string? error = null;
        // the reactor stops reading the old kick fd before it is closed
        UnwatchKick((int)index);
        using (q.AccessLock.EnterScope())
        {
            q.SetKick(fd ?? EventFd.Create(nonBlocking: true), noFd);
            if (!VirtioFeature.Has(Features, VirtioFeature.ProtocolFeatures) || (q.Quirks & RingQuirks.LiveOnKick) != 0) q.Enabled = true;
            if (Memory.Count > 0 && q.Size > 0 && q.Address != null && !q.Started) error = q.Start(Memory);
        }
        UpdateKickWatch((int)index);
        return error == null ? Outcome.Ok : Outcome.Fail($"queue {index} cannot start: {error}");
    }

    private Outcome SetVringEnable(ReadOnlySpan<byte> p)
    {
        var (index, num) = Payload.ReadVringState(p);
        if (!ValidQueue(index, out var q, out var err)) return err;
        if (num > 1) return Outcome.Fail($"SET_VRING_ENABLE for queue {index} with state {num}");
        bool enable = num == 1;
        using (q.AccessLock.EnterScope())
        {
            // the application stops polling a disabled ring: nothing taken may stay unreturned
            if (!enable) q.ReturnHeldTaken();
            q.Enabled = enable;
        }
        if (_ops is { } ops) Callback("VringStateChanged", () => ops.VringStateChanged(this, (int)index, enable));
        return Outcome.Ok;
    }

    private Outcome InbandKick(ReadOnlySpan<byte> p)
    {
        if (!HasProtocolFeature(ProtocolFeature.InbandNotifications))
            return Outcome.Fail("VRING_KICK without VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS");
        var (index, _) = Payload.ReadVringState(p);
        if (!ValidQueue(index, out var q, out var err)) return err;
        if (q.KickFd is { } fd) EventFd.Signal(fd);
        return Outcome.Ok;
    }

    private Outcome SetStatus(ulong value)
    {
        if (value > 0xff) return Outcome.Fail($"SET_STATUS 0x{value:x} is not a status byte");
        var status = (VirtioDeviceStatus)value;
        if (status == VirtioDeviceStatus.None)
        {
            // writing 0 resets the device (virtio 1.2, 2.1). QEMU 7.2 sends it on every stop *before* GET_VRING_BASE,
            // so the rings keep running (work in flight completes) and keep their positions until the front-end asks
            // for them or sets the device up again (the next SET_FEATURES finishes the reset)
            StopRunning("SET_STATUS 0");
            Status = status;
            _resetPending = true;
            return Outcome.Ok;
        }
        _resetPending = false;
        if ((status & VirtioDeviceStatus.FeaturesOk) != 0 && !FeaturesSet)
            _logger.LogWarning("device {Id}: FEATURES_OK before SET_FEATURES", Id);
        Status = status;
        return Outcome.Ok;
    }

    private Outcome GetConfig(ReadOnlySpan<byte> p, ReplyBuffer reply)
    {
        uint offset = BinaryPrimitives.ReadUInt32LittleEndian(p);
        uint size = BinaryPrimitives.ReadUInt32LittleEndian(p[4..]);
        uint flags = BinaryPrimitives.ReadUInt32LittleEndian(p[8..]);
        if (size > Payload.MaxConfigSize || offset > Payload.MaxConfigSize || offset + size > Payload.MaxConfigSize)
            return Outcome.Close($"GET_CONFIG offset {offset} size {size} beyond the {Payload.MaxConfigSize}-byte config space");
        var r = reply.Reserve(Payload.ConfigHeader + (int)size);
        r.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(r, offset);
        BinaryPrimitives.WriteUInt32LittleEndian(r[4..], size);
        BinaryPrimitives.WriteUInt32LittleEndian(r[8..], flags);
        if (_options.ConfigSpace is not { } cfg || !cfg.Read(this, offset, r.Slice(Payload.ConfigHeader, (int)size)))
        {
            // a zero-sized reply tells the front-end the read failed (what QEMU checks for)
            BinaryPrimitives.WriteUInt32LittleEndian(r[4..], 0);
            reply.Reserve(Payload.ConfigHeader);
            _logger.LogWarning("device {Id}: GET_CONFIG offset {Offset} size {Size} refused", Id, offset, size);
        }
        return Outcome.Ok;
    }

    private Outcome SetConfig(ReadOnlySpan<byte> p)
    {
        uint offset = BinaryPrimitives.ReadUInt32LittleEndian(p);
        uint size = BinaryPrimitives.ReadUInt32LittleEndian(p[4..]);
        uint flags = BinaryPrimitives.ReadUInt32LittleEndian(p[8..]);
        if (size > Payload.MaxConfigSize || offset + (ulong)size > Payload.MaxConfigSize || p.Length < Payload.ConfigHeader + size)
            return Outcome.Close($"SET_CONFIG offset {offset} size {size} does not fit the message or the config space");
        if (_options.ConfigSpace is not { } cfg) return Outcome.Fail("SET_CONFIG: this device has no config space");
        return cfg.Write(this, offset, p.Slice(Payload.ConfigHeader, (int)size), flags)
            ? Outcome.Ok : Outcome.Fail($"SET_CONFIG offset {offset} size {size} refused");
    }

    private Outcome CreateCryptoSession(ReadOnlySpan<byte> p, ReplyBuffer reply)
    {
        if (!HasProtocolFeature(ProtocolFeature.CryptoSession))
            return Outcome.Fail("CREATE_CRYPTO_SESSION without VHOST_USER_PROTOCOL_F_CRYPTO_SESSION");
        if (_options.CryptoSessions is not { } sessions) return Outcome.Fail("CREATE_CRYPTO_SESSION: this device has no crypto sessions");
        var r = reply.Reserve(p.Length);
        p.CopyTo(r);
        return sessions.CreateSession(this, p, r) is { } error ? Outcome.Close($"CREATE_CRYPTO_SESSION: {error}") : Outcome.Ok;
    }

    private Outcome CloseCryptoSession(ulong id)
    {
        if (!HasProtocolFeature(ProtocolFeature.CryptoSession))
            return Outcome.Fail("CLOSE_CRYPTO_SESSION without VHOST_USER_PROTOCOL_F_CRYPTO_SESSION");
        if (_options.CryptoSessions is not { } sessions) return Outcome.Fail("CLOSE_CRYPTO_SESSION: this device has no crypto sessions");
        // an unknown id is the guest's mistake, passed on by QEMU without a reply: logged, not a reason to drop the device
        if (sessions.CloseSession(this, id) is { } error) _logger.LogWarning("device {Id}: CLOSE_CRYPTO_SESSION {Session}: {Error}", Id, id, error);
        return Outcome.Ok;
    }

    private Outcome SendRarp(ulong value)
    {
        if (!HasProtocolFeature(ProtocolFeature.Rarp)) return Outcome.Fail("SEND_RARP without VHOST_USER_PROTOCOL_F_RARP");
        var mac = new byte[6];
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        b[..6].CopyTo(mac);
        RarpMac = mac;
        RarpPending = true;
        _logger.LogInformation("device {Id}: SEND_RARP for {Mac}: the data path announces it", Id, Convert.ToHexString(mac));
        return Outcome.Ok;
    }

    private Outcome SetMtu(ulong value)
    {
        if (!HasProtocolFeature(ProtocolFeature.NetMtu)) return Outcome.Fail("NET_SET_MTU without VHOST_USER_PROTOCOL_F_NET_MTU");
        if (value is < 68 or > 65535) return Outcome.Fail($"NET_SET_MTU {value} outside 68..65535");
        Mtu = (int)value;
        return Outcome.Ok;
    }
}
