using System.Buffers.Binary;
using Vhost.Device;
using Vhost.Interop;
using Vhost.Protocol;

namespace Vhost.Fuzz;

/// <summary>
/// A device driven through its message handlers, as a connection would (the same framing checks first), for
/// targets that need a running device: the front-end's side of the set-up in a few calls.
/// </summary>
internal sealed class FuzzDevice : IDisposable
{
    private readonly ReplyBuffer _reply = new();
    private readonly List<SafeFd?> _fds = [];

    public FuzzDevice(VhostSocketOptions options) => Device = new VhostDevice(options, Log.Logger, null);

    public VhostDevice Device { get; }

    /// <summary>The last reply's payload.</summary>
    public ReadOnlySpan<byte> Reply => _reply.Data.AsSpan(0, _reply.Length);

    /// <summary>Sends one message (taking ownership of <paramref name="fd"/>); true if the device accepted it.</summary>
    public bool Send(VhostUserRequest request, ReadOnlySpan<byte> payload, SafeFd? fd = null)
    {
        _fds.Clear();
        if (fd != null) _fds.Add(fd);
        try
        {
            var spec = RequestTable.Get((uint)request)!.Value;
            if (spec.CheckFraming(payload.Length, _fds.Count) != null) return false;
            _reply.Clear();
            var header = new MessageHeader((uint)request, MessageHeader.Version, (uint)payload.Length);
            var outcome = Device.Handle(header, payload, _fds, _reply);
            Device.CheckReady();
            return outcome.Kind == OutcomeKind.Ok && Device.FaultReason == null;
        }
        finally
        {
            foreach (var f in _fds) f?.Dispose();
            _fds.Clear();
        }
    }

    public bool SendU64(VhostUserRequest request, ulong value)
    {
        Span<byte> p = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(p, value);
        return Send(request, p);
    }

    public bool SendState(VhostUserRequest request, uint index, uint num)
    {
        Span<byte> p = stackalloc byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(p, index);
        BinaryPrimitives.WriteUInt32LittleEndian(p[4..], num);
        return Send(request, p);
    }

    /// <summary>One region, UVA = GPA, mapped from offset 0 of <paramref name="fd"/>.</summary>
    public bool SetMemTable(ulong gpa, ulong size, SafeFd fd)
    {
        Span<byte> p = stackalloc byte[Payload.MemoryTableHeader + Payload.MemoryRegion];
        p.Clear();
        p[0] = 1;
        BinaryPrimitives.WriteUInt64LittleEndian(p[8..], gpa);
        BinaryPrimitives.WriteUInt64LittleEndian(p[16..], size);
        BinaryPrimitives.WriteUInt64LittleEndian(p[24..], gpa);
        return Send(VhostUserRequest.SetMemTable, p, fd);
    }

    /// <summary>SET_VRING_NUM, ADDR, BASE, CALL (no fd) and KICK (no fd: the ring starts).</summary>
    public bool StartQueue(uint index, uint size, uint baseIndex, ulong desc, ulong avail, ulong used)
    {
        if (!SendState(VhostUserRequest.SetVringNum, index, size)) return false;
        Span<byte> a = stackalloc byte[Payload.VringAddress];
        a.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(a, index);
        BinaryPrimitives.WriteUInt64LittleEndian(a[8..], desc);
        BinaryPrimitives.WriteUInt64LittleEndian(a[16..], used);
        BinaryPrimitives.WriteUInt64LittleEndian(a[24..], avail);
        if (!Send(VhostUserRequest.SetVringAddr, a)) return false;
        if (!SendState(VhostUserRequest.SetVringBase, index, baseIndex)) return false;
        if (!SendU64(VhostUserRequest.SetVringCall, index | Payload.VringNoFdFlag)) return false;
        return SendU64(VhostUserRequest.SetVringKick, index | Payload.VringNoFdFlag);
    }

    /// <summary>GET_VRING_BASE: stops the ring; returns the base it reports.</summary>
    public uint StopQueue(uint index)
    {
        if (!SendState(VhostUserRequest.GetVringBase, index, 0) || _reply.Length < 8) return 0;
        return BinaryPrimitives.ReadUInt32LittleEndian(Reply[4..]);
    }

    public void Dispose()
    {
        _reply.Clear();
        Device.Release(); // no reactor here: nothing in flight to wait for
    }
}
