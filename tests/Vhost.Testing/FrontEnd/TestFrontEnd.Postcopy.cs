using Vhost.Interop;
using Vhost.Memory;
using Vhost.Protocol;

namespace Vhost.Testing.FrontEnd;

// Postcopy (VHOST_USER_PROTOCOL_F_PAGEFAULT) as QEMU 7.2's hw/virtio/vhost-user.c sends it: ADVISE without
// NEED_REPLY (the reply carries the userfaultfd), LISTEN and END with NEED_REPLY, memory tables without it
// (the reply carries the back-end's addresses) followed by a u64 0 acknowledgement under the same request.
internal sealed partial class TestFrontEnd
{
    /// <summary>POSTCOPY_ADVISE: the reply's fd (the back-end's userfaultfd), or null when it sent none.</summary>
    public SafeFd? PostcopyAdvise()
    {
        Send(VhostUserRequest.PostcopyAdvise);
        var m = ExpectReply(VhostUserRequest.PostcopyAdvise, 0);
        SafeFd? fd = m.Fds.Count > 0 ? m.Fds[0] : null;
        for (int i = 1; i < m.Fds.Count; i++) m.Fds[i].Dispose();
        return fd;
    }

    /// <summary>POSTCOPY_LISTEN with NEED_REPLY, as QEMU sends it: the ack (0 = success).</summary>
    public ulong PostcopyListen() => SendSet(VhostUserRequest.PostcopyListen, default, default, needReply: true)!.Value;

    /// <summary>POSTCOPY_END with NEED_REPLY: the back-end's u64 (0 = success).</summary>
    public ulong PostcopyEnd()
    {
        Send(VhostUserRequest.PostcopyEnd, default, default, needReply: true);
        return ReadAck(VhostUserRequest.PostcopyEnd);
    }

    /// <summary>
    /// SET_MEM_TABLE after POSTCOPY_LISTEN: reads the reply (the table with the back-end's addresses in
    /// userspace_addr) and, when <paramref name="acknowledge"/>, sends QEMU's acknowledgement.
    /// </summary>
    public MemoryRegionInfo[] SetMemTablePostcopy(FrontEndMemory memory, bool acknowledge = true)
    {
        ArgumentNullException.ThrowIfNull(memory);
        var (infos, fds) = memory.Describe();
        var payload = VhostUserPayload.MemoryTable(infos);
        Send(VhostUserRequest.SetMemTable, payload, fds);
        using var m = ExpectReply(VhostUserRequest.SetMemTable, payload.Length);
        var (_, regions) = VhostUserPayload.ReadMemoryTable(m.Payload);
        if (acknowledge) PostcopyMemoryAck(VhostUserRequest.SetMemTable);
        return regions;
    }

    /// <summary>ADD_MEM_REG after POSTCOPY_LISTEN: the region as the back-end answered it (its address in userspace_addr).</summary>
    public MemoryRegionInfo AddMemRegPostcopy(FrontEndRegion region)
    {
        ArgumentNullException.ThrowIfNull(region);
        var payload = VhostUserPayload.SingleRegion(region.Info);
        Send(VhostUserRequest.AddMemReg, payload, [region.Fd]);
        using var m = ExpectReply(VhostUserRequest.AddMemReg, payload.Length);
        return VhostUserPayload.ReadSingleRegion(m.Payload);
    }

    /// <summary>QEMU's acknowledgement of a postcopy memory reply: a u64 (0 = registered, go ahead), no fds, no NEED_REPLY.</summary>
    public void PostcopyMemoryAck(VhostUserRequest request, ulong status = 0) => Send(request, VhostUserPayload.U64(status));
}
