using Vhost.Interop;
using Vhost.Memory;
using Vhost.Protocol;
using Vhost.Rings;

namespace Vhost.Testing.FrontEnd;

// Typed, well-formed requests. Setters take needReply: it sets NEED_REPLY and then waits for the u64 ack
// and returns it (0 = success), whether or not REPLY_ACK was negotiated, so a test can also see what a
// back-end does with an unnegotiated NEED_REPLY. Without needReply they return null and read nothing.
internal sealed partial class TestFrontEnd
{
    public ulong GetFeatures()
    {
        Send(VhostUserRequest.GetFeatures);
        using var m = ExpectReply(VhostUserRequest.GetFeatures, VhostUserPayload.U64Size);
        return m.ReadU64();
    }

    public ulong? SetFeatures(ulong features, bool needReply = false)
    {
        AckedFeatures = features;
        return SendSet(VhostUserRequest.SetFeatures, VhostUserPayload.U64(features), default, needReply);
    }

    public ulong GetProtocolFeatures()
    {
        Send(VhostUserRequest.GetProtocolFeatures);
        using var m = ExpectReply(VhostUserRequest.GetProtocolFeatures, VhostUserPayload.U64Size);
        return m.ReadU64();
    }

    public ulong? SetProtocolFeatures(ulong features, bool needReply = false)
    {
        AckedProtocolFeatures = features;
        return SendSet(VhostUserRequest.SetProtocolFeatures, VhostUserPayload.U64(features), default, needReply);
    }

    public ulong? SetOwner(bool needReply = false) => SendSet(VhostUserRequest.SetOwner, default, default, needReply);

    public ulong? ResetOwner(bool needReply = false) => SendSet(VhostUserRequest.ResetOwner, default, default, needReply);

    public ulong GetQueueNum() => GetU64(VhostUserRequest.GetQueueNum);

    public ulong GetMaxMemSlots() => GetU64(VhostUserRequest.GetMaxMemSlots);

    /// <summary>SET_MEM_TABLE with one fd per region, in order.</summary>
    public ulong? SetMemTable(IReadOnlyList<MemoryRegionInfo> regions, ReadOnlySpan<SafeFd> fds, bool needReply = false) =>
        SendSet(VhostUserRequest.SetMemTable, VhostUserPayload.MemoryTable(regions), fds, needReply);

    /// <summary>SET_MEM_TABLE describing every region of <paramref name="memory"/> (hostile ones included).</summary>
    public ulong? SetMemTable(FrontEndMemory memory, bool needReply = false)
    {
        ArgumentNullException.ThrowIfNull(memory);
        var (infos, fds) = memory.Describe();
        return SetMemTable(infos, fds, needReply);
    }

    public ulong? AddMemReg(in MemoryRegionInfo region, SafeFd fd, bool needReply = false) =>
        SendSet(VhostUserRequest.AddMemReg, VhostUserPayload.SingleRegion(region), [fd], needReply);

    public ulong? AddMemReg(FrontEndRegion region, bool needReply = false)
    {
        ArgumentNullException.ThrowIfNull(region);
        return AddMemReg(region.Info, region.Fd, needReply);
    }

    /// <summary>REM_MEM_REG; the spec says no fd, so none is sent unless the test passes one.</summary>
    public ulong? RemMemReg(in MemoryRegionInfo region, SafeFd? fd = null, bool needReply = false) =>
        SendSet(VhostUserRequest.RemMemReg, VhostUserPayload.SingleRegion(region), fd is null ? default : [fd], needReply);

    public ulong? SetVringNum(uint index, uint num, bool needReply = false) =>
        SendSet(VhostUserRequest.SetVringNum, VhostUserPayload.VringState(index, num), default, needReply);

    public ulong? SetVringAddr(in VringAddress address, bool needReply = false) =>
        SendSet(VhostUserRequest.SetVringAddr, VhostUserPayload.VringAddress(address), default, needReply);

    /// <summary>SET_VRING_BASE. For packed rings <paramref name="num"/> carries the wrap counter in bit 15.</summary>
    public ulong? SetVringBase(uint index, uint num, bool needReply = false) =>
        SendSet(VhostUserRequest.SetVringBase, VhostUserPayload.VringState(index, num), default, needReply);

    /// <summary>GET_VRING_BASE (which also stops the ring); returns the reply's num.</summary>
    public uint GetVringBase(uint index)
    {
        Send(VhostUserRequest.GetVringBase, VhostUserPayload.VringState(index, 0));
        using var m = ExpectReply(VhostUserRequest.GetVringBase, VhostUserPayload.VringStateSize);
        var s = VhostUserPayload.ReadVringState(m.Payload);
        if (s.Index != index) throw new InvalidDataException($"GET_VRING_BASE for queue {index} answered for queue {s.Index}");
        return s.Num;
    }

    /// <summary>SET_VRING_KICK with <paramref name="fd"/>, or with the no-fd (polling) flag when it is null.</summary>
    public ulong? SetVringKick(uint index, SafeFd? fd, bool needReply = false) =>
        SendVringFile(VhostUserRequest.SetVringKick, index, fd, needReply);

    public ulong? SetVringCall(uint index, SafeFd? fd, bool needReply = false) =>
        SendVringFile(VhostUserRequest.SetVringCall, index, fd, needReply);

    public ulong? SetVringErr(uint index, SafeFd? fd, bool needReply = false) =>
        SendVringFile(VhostUserRequest.SetVringErr, index, fd, needReply);

    public ulong? SetVringEnable(uint index, bool enable, bool needReply = false) =>
        SendSet(VhostUserRequest.SetVringEnable, VhostUserPayload.VringState(index, enable ? 1u : 0u), default, needReply);

    /// <summary>VRING_KICK in-band (INBAND_NOTIFICATIONS).</summary>
    public ulong? VringKick(uint index, bool needReply = false) =>
        SendSet(VhostUserRequest.VringKick, VhostUserPayload.VringState(index, 0), default, needReply);

    public ulong? SetVringEndian(uint index, bool bigEndian, bool needReply = false) =>
        SendSet(VhostUserRequest.SetVringEndian, VhostUserPayload.VringState(index, bigEndian ? 1u : 0u), default, needReply);

    /// <summary>
    /// GET_CONFIG for [offset, offset+size). Null when the back-end signals an error with an empty payload;
    /// throws when the reply size is neither empty nor the requested size.
    /// </summary>
    public ConfigPayload? GetConfig(uint offset, uint size, uint flags = 0)
    {
        Send(VhostUserRequest.GetConfig, VhostUserPayload.Config(offset, size, flags, new byte[size]));
        using var m = ExpectReply(VhostUserRequest.GetConfig);
        if (m.Payload.Length == 0) return null;
        if (m.Payload.Length != VhostUserPayload.ConfigHeaderSize + (int)size)
            throw new InvalidDataException($"GET_CONFIG reply has {m.Payload.Length} bytes for a {size}-byte request");
        return VhostUserPayload.ReadConfig(m.Payload);
    }

    public ulong? SetConfig(uint offset, ReadOnlySpan<byte> data, uint flags = 0, bool needReply = false) =>
        SendSet(VhostUserRequest.SetConfig, VhostUserPayload.Config(offset, (uint)data.Length, flags, data), default, needReply);

    public ulong? SetStatus(VirtioDeviceStatus status, bool needReply = false) =>
        SendSet(VhostUserRequest.SetStatus, VhostUserPayload.U64((ulong)status), default, needReply);

    public VirtioDeviceStatus GetStatus() => (VirtioDeviceStatus)(byte)GetU64(VhostUserRequest.GetStatus);

    public ulong? ResetDevice(bool needReply = false) => SendSet(VhostUserRequest.ResetDevice, default, default, needReply);

    public ulong? SendRarp(ReadOnlySpan<byte> mac, bool needReply = false) =>
        SendSet(VhostUserRequest.SendRarp, VhostUserPayload.Mac(mac), default, needReply);

    public ulong? NetSetMtu(ulong mtu, bool needReply = false) =>
        SendSet(VhostUserRequest.NetSetMtu, VhostUserPayload.U64(mtu), default, needReply);

    /// <summary>SET_BACKEND_REQ_FD with a socket the test made (QEMU sends no payload).</summary>
    public ulong? SetBackendReqFd(SafeFd fd, bool needReply = false) =>
        SendSet(VhostUserRequest.SetBackendReqFd, default, [fd], needReply);

    /// <summary>Makes a socket pair, hands one end to the back-end, and returns the front-end's end.</summary>
    public UnixSocket OpenBackendChannel(bool needReply = false)
    {
        var (ours, theirs) = UnixSocket.Pair();
        try
        {
            using (theirs)
            {
                ulong? ack = SetBackendReqFd(theirs.Handle, needReply);
                if (ack is ulong a && a != 0) throw new InvalidOperationException($"back-end refused SET_BACKEND_REQ_FD (ack {a})");
            }
            return ours;
        }
        catch
        {
            ours.Dispose();
            throw;
        }
    }

    /// <summary>
    /// SET_LOG_BASE with a shared-memory fd. With LOG_SHMFD the back-end always answers; QEMU reads the reply's
    /// header and whatever payload it has (ours: none), so 0 stands for a reply without payload.
    /// </summary>
    public ulong? SetLogBase(in LogPayload log, SafeFd fd, bool readReply = true)
    {
        Send(VhostUserRequest.SetLogBase, VhostUserPayload.Log(log), [fd]);
        if (!readReply) return null;
        using var m = ExpectReply(VhostUserRequest.SetLogBase);
        return m.Payload.Length >= VhostUserPayload.U64Size ? m.ReadU64() : 0;
    }

    public ulong? SetLogFd(SafeFd fd, bool needReply = false) =>
        SendSet(VhostUserRequest.SetLogFd, default, [fd], needReply);

    /// <summary>IOTLB_MSG with NEED_REPLY, as QEMU sends every one; the acknowledgement (0: done).</summary>
    public ulong SendIotlb(in IotlbPayload message)
    {
        Send(VhostUserRequest.IotlbMsg, VhostUserPayload.Iotlb(message), needReply: true);
        return ReadAck(VhostUserRequest.IotlbMsg);
    }

    /// <summary>GET_INFLIGHT_FD: the back-end's description of the area and its fd (null if none came).</summary>
    public (InflightPayload Info, SafeFd? Fd) GetInflightFd(ushort numQueues, ushort queueSize)
    {
        Send(VhostUserRequest.GetInflightFd, VhostUserPayload.Inflight(new InflightPayload(0, 0, numQueues, queueSize)));
        var m = ExpectReply(VhostUserRequest.GetInflightFd);
        var info = VhostUserPayload.ReadInflight(m.Payload);
        SafeFd? fd = m.Fds.Count > 0 ? m.Fds[0] : null;
        for (int i = 1; i < m.Fds.Count; i++) m.Fds[i].Dispose();
        return (info, fd);
    }

    public ulong? SetInflightFd(in InflightPayload info, SafeFd fd, bool needReply = false) =>
        SendSet(VhostUserRequest.SetInflightFd, VhostUserPayload.Inflight(info), [fd], needReply);

    private ulong GetU64(VhostUserRequest request)
    {
        Send(request);
        using var m = ExpectReply(request, VhostUserPayload.U64Size);
        return m.ReadU64();
    }

    private ulong? SendVringFile(VhostUserRequest request, uint index, SafeFd? fd, bool needReply) =>
        SendSet(request, VhostUserPayload.VringFile(index, fd is null), fd is null ? default : [fd], needReply);

    private ulong? SendSet(VhostUserRequest request, ReadOnlySpan<byte> payload, ReadOnlySpan<SafeFd> fds, bool needReply)
    {
        Send(request, payload, fds, needReply);
        return needReply ? ReadAck(request) : null;
    }
}
