using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using Vhost.Interop;
using Vhost.Memory;
using Vhost.Protocol;

namespace Vhost.Device;

/// <summary>Where a device is in postcopy live migration (VHOST_USER_PROTOCOL_F_PAGEFAULT, destination side).</summary>
internal enum PostcopyPhase
{
    None,
    /// <summary>POSTCOPY_ADVISE: a userfaultfd was made and handed to the front-end.</summary>
    Advised,
    /// <summary>POSTCOPY_LISTEN: memory tables are answered with our addresses and registered after the front-end's ack.</summary>
    Listening,
}

/// <summary>
/// Postcopy live migration on the destination. The flow QEMU (hw/virtio/vhost-user.c) drives:
/// POSTCOPY_ADVISE (reply: a userfaultfd), POSTCOPY_LISTEN (NEED_REPLY), then memory tables whose replies carry
/// our mapping of each region (SET_MEM_TABLE: the table back; ADD_MEM_REG: the region back, one reply each) and
/// one acknowledgement from QEMU (a u64 0 under the same request number, no fds); only after it do we register
/// the regions (MISSING mode) and put them to use, because from then on QEMU answers our faults. A page not yet
/// migrated stalls the thread touching it until QEMU has placed it and woken us. POSTCOPY_END (reply u64):
/// every page is here, unregister and close.
/// </summary>
public sealed partial class VhostDevice
{
    private UserFaultFd? _userFault;
    // regions registered with the userfaultfd, each holding a reference so it stays mapped until unregistered
    private readonly List<GuestMemoryRegion> _faultRegistered = [];
    // between our postcopy memory reply and the front-end's acknowledgement: what to register and publish then
    private bool _postcopyAckDue;
    private GuestMemory? _postcopyTable;
    private readonly List<GuestMemoryRegion> _postcopyAdded = [];

    /// <summary>Where the device is in a postcopy migration.</summary>
    internal PostcopyPhase Postcopy { get; private set; }

    /// <summary>Regions currently registered with the postcopy userfaultfd.</summary>
    public int PostcopyRegisteredRegions => _faultRegistered.Count;

    private Outcome PostcopyAdvise(ReplyBuffer reply)
    {
        // a refusal is a reply without the fd: QEMU fails the migration ("Failed to get ufd"), the device lives on
        if (!HasProtocolFeature(ProtocolFeature.Pagefault))
            return PostcopyRefused("POSTCOPY_ADVISE without VHOST_USER_PROTOCOL_F_PAGEFAULT negotiated");
        if (Postcopy != PostcopyPhase.None)
            return PostcopyRefused($"POSTCOPY_ADVISE while postcopy is already {Postcopy}");
        var uffd = UserFaultFd.TryCreate(out var error);
        if (uffd == null) return PostcopyRefused($"POSTCOPY_ADVISE: no userfaultfd: {error}");
        try
        {
            reply.Fd = FileDescriptors.Duplicate(uffd.Handle);
        }
        catch (NativeException e)
        {
            uffd.Dispose();
            return PostcopyRefused($"POSTCOPY_ADVISE: {e.Message}");
        }
        _userFault = uffd;
        Postcopy = PostcopyPhase.Advised;
        _logger.LogInformation("device {Id} ({Path}): postcopy advised, userfaultfd handed to the front-end", Id, SocketPath);
        return Outcome.Ok;
    }

    private Outcome PostcopyRefused(string why)
    {
        _logger.LogError("device {Id} ({Path}): {Why}; refused", Id, SocketPath, why);
        return Outcome.Ok;
    }

    private Outcome PostcopyListen(in MessageHeader header, ReplyBuffer reply)
    {
        string? refusal = null;
        if (!HasProtocolFeature(ProtocolFeature.Pagefault))
            refusal = "POSTCOPY_LISTEN without VHOST_USER_PROTOCOL_F_PAGEFAULT negotiated";
        else if (Postcopy != PostcopyPhase.Advised)
            refusal = Postcopy == PostcopyPhase.None ? "POSTCOPY_LISTEN before POSTCOPY_ADVISE" : "POSTCOPY_LISTEN twice";
        // regions mapped before now were never answered with our addresses: QEMU could not resolve their faults
        else if (Memory.Count > 0)
            refusal = $"POSTCOPY_LISTEN with {Memory.Count} memory regions already mapped";
        if (refusal == null)
        {
            Postcopy = PostcopyPhase.Listening;
            _logger.LogInformation("device {Id} ({Path}): postcopy listening", Id, SocketPath);
        }
        // QEMU sets NEED_REPLY and waits whether or not REPLY_ACK was negotiated; with it, the connection acks
        if (header.NeedReply && !HasProtocolFeature(ProtocolFeature.ReplyAck))
        {
            if (refusal != null) _logger.LogError("device {Id} ({Path}): {Why}; refused", Id, SocketPath, refusal);
            reply.U64(refusal == null ? 0UL : 1UL);
            reply.Forced = true;
            return Outcome.Ok;
        }
        return refusal == null ? Outcome.Ok : Outcome.Fail(refusal);
    }

    private Outcome PostcopyEnd(ReplyBuffer reply)
    {
        if (Postcopy == PostcopyPhase.None)
        {
            _logger.LogError("device {Id} ({Path}): POSTCOPY_END without POSTCOPY_ADVISE; refused", Id, SocketPath);
            reply.U64(1);
            return Outcome.Ok;
        }
        string? error = EndPostcopy();
        reply.U64(error == null ? 0UL : 1UL);
        if (error != null) _logger.LogError("device {Id} ({Path}): POSTCOPY_END: {Error}", Id, SocketPath, error);
        else _logger.LogInformation("device {Id} ({Path}): postcopy ended", Id, SocketPath);
        return Outcome.Ok;
    }

    /// <summary>Unregisters every region and closes our userfaultfd; the first failure, if any.</summary>
    private string? EndPostcopy()
    {
        string? error = null;
        foreach (var r in _faultRegistered)
        {
            error ??= _userFault?.Unregister(r.Window, UserFaultFd.PageSizeOf(r.Fd));
            r.Release();
        }
        _faultRegistered.Clear();
        DropPostcopyPending();
        // closing wakes any thread still stalled on a fault (it then sees whatever the page holds)
        _userFault?.Dispose();
        _userFault = null;
        Postcopy = PostcopyPhase.None;
        return error;
    }

    /// <summary>The connection is closing: nothing of ours may stay stalled on a fault QEMU will never answer.</summary>
    private void ClosePostcopy()
    {
        if (Postcopy == PostcopyPhase.None && _userFault == null) return;
        if (EndPostcopy() is { } e) _logger.LogWarning("device {Id} ({Path}): {Error}", Id, SocketPath, e);
    }

    private void DropPostcopyPending()
    {
        _postcopyAckDue = false;
        _postcopyTable?.Release();
        _postcopyTable = null;
        foreach (var r in _postcopyAdded) r.Dispose();
        _postcopyAdded.Clear();
    }

    /// <summary>While a postcopy memory reply waits for its ack, only the ack (or more ADD_MEM_REG) may come.</summary>
    private Outcome? PostcopyOrderCheck(VhostUserRequest request)
    {
        if (!_postcopyAckDue || request == VhostUserRequest.AddMemReg) return null;
        return Outcome.Close($"{request} while the front-end's acknowledgement of our postcopy memory reply is due");
    }

    /// <summary>
    /// Whether a message is QEMU's acknowledgement of a postcopy memory reply: while listening, a u64 with no fd
    /// under SET_MEM_TABLE, ADD_MEM_REG or REM_MEM_REG (or 0, when QEMU had no region to send), sizes no real
    /// request of those types has. It bypasses the framing table.
    /// </summary>
    internal bool IsPostcopyAck(in MessageHeader header, int fdCount) =>
        Postcopy == PostcopyPhase.Listening && header.Size == Payload.U64 && fdCount == 0 &&
        (VhostUserRequest)header.Request is VhostUserRequest.SetMemTable or VhostUserRequest.AddMemReg
            or VhostUserRequest.RemMemReg or VhostUserRequest.None;

    /// <summary>The front-end is ready for our faults: register what was answered, then use it.</summary>
    internal Outcome PostcopyAck(ReadOnlySpan<byte> p)
    {
        ulong status = Payload.ReadU64(p);
        if (!_postcopyAckDue)
        {
            // QEMU acknowledges REM_MEM_REG batches too: nothing waits for it
            _logger.LogDebug("device {Id}: postcopy acknowledgement with nothing pending", Id);
            return status == 0 ? Outcome.Ok : Outcome.Close($"the front-end reported postcopy failure {status}");
        }
        if (status != 0)
        {
            DropPostcopyPending();
            return Outcome.Close($"the front-end could not take our postcopy memory reply (status {status})");
        }
        var regions = _postcopyTable?.Regions ?? (IReadOnlyList<GuestMemoryRegion>)_postcopyAdded;
        foreach (var r in regions)
        {
            if (_faultRegistered.Contains(r)) continue;
            if (_userFault!.RegisterMissing(r.Window, UserFaultFd.PageSizeOf(r.Fd)) is { } error)
            {
                DropPostcopyPending();
                return Outcome.Close($"memory region [{r.Info}]: {error}");
            }
            r.Acquire();
            _faultRegistered.Add(r);
        }
        GuestMemory table;
        if (_postcopyTable != null)
        {
            table = _postcopyTable;
            _postcopyTable = null;
            StopRunning("memory table changed");
        }
        else
        {
            table = GuestMemory.TryCreate(Memory.Regions.Concat(_postcopyAdded), out var overlap)
                ?? throw new InvalidOperationException($"checked at ADD_MEM_REG: {overlap}");
        }
        foreach (var r in _postcopyAdded) r.Dispose();
        _postcopyAdded.Clear();
        _postcopyAckDue = false;
        _logger.LogDebug("device {Id}: postcopy memory registered ({Count} regions)", Id, _faultRegistered.Count);
        return Publish(table) is { } e ? Outcome.Close(e) : Outcome.Ok;
    }

    /// <summary>SET_MEM_TABLE while listening: map, answer with our addresses, wait for the ack (no NEED_REPLY here).</summary>
    private Outcome SetMemTablePostcopy(ReadOnlySpan<byte> p, List<GuestMemoryRegion> mapped, ReplyBuffer reply)
    {
        var table = GuestMemory.TryCreate(mapped, out var overlap);
        foreach (var r in mapped) r.Dispose();
        if (table == null) return Outcome.Fail(overlap!);
        var r2 = reply.Reserve(p.Length);
        p.CopyTo(r2);
        for (int i = 0; i < mapped.Count; i++)
        {
            // the reply is the request with userspace_addr replaced by where we mapped the region
            int at = Payload.MemoryTableHeader + i * Payload.MemoryRegion + 16;
            BinaryPrimitives.WriteUInt64LittleEndian(r2[at..], (ulong)mapped[i].Window.Address);
        }
        reply.Forced = true;
        _postcopyTable = table;
        _postcopyAckDue = true;
        return Outcome.Ok;
    }

    /// <summary>ADD_MEM_REG while listening: map, answer with the region at our address; the ack follows the batch.</summary>
    private Outcome AddMemoryRegionPostcopy(ReadOnlySpan<byte> p, MemoryRegionInfo info, SafeFd fd, ReplyBuffer reply)
    {
        if (MapAddedRegion(info, fd, Memory.Count + _postcopyAdded.Count, out var refusal) is not { } region) return refusal;
        if (GuestMemory.TryCreate(Memory.Regions.Concat(_postcopyAdded).Append(region), out var error) is not { } check)
        {
            region.Dispose();
            return Outcome.Fail($"ADD_MEM_REG [{info}]: {error}");
        }
        check.Release();
        var r = reply.Reserve(p.Length);
        p.CopyTo(r);
        // VhostUserMemRegMsg: u64 padding, then the region; userspace_addr is its third field
        BinaryPrimitives.WriteUInt64LittleEndian(r[(8 + 16)..], (ulong)region.Window.Address);
        reply.Forced = true;
        _postcopyAdded.Add(region);
        _postcopyAckDue = true;
        return Outcome.Ok;
    }
}
