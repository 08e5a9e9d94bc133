namespace Vhost.Protocol;

/// <summary>How a request's payload size is checked.</summary>
internal enum SizeRule
{
    /// <summary>Exactly <see cref="RequestSpec.Size"/> bytes.</summary>
    Exact,
    /// <summary>At least <see cref="RequestSpec.Size"/> bytes (the handler checks the rest).</summary>
    AtLeast,
    /// <summary>Anything up to the payload maximum (the handler checks).</summary>
    Any,
}

/// <summary>
/// What the framing of one request must look like: payload size and fd count. The connection checks
/// these before any handler runs, so handlers see only well-framed messages.
/// </summary>
internal readonly record struct RequestSpec(VhostUserRequest Request, SizeRule Rule, int Size, int MinFds, int MaxFds, bool HasReply)
{
    public string? CheckFraming(int payloadSize, int fdCount)
    {
        switch (Rule)
        {
            case SizeRule.Exact when payloadSize != Size:
                return $"{Request} payload is {payloadSize} bytes, expected {Size}";
            case SizeRule.AtLeast when payloadSize < Size:
                return $"{Request} payload is {payloadSize} bytes, expected at least {Size}";
        }
        if (fdCount < MinFds || fdCount > MaxFds)
            return MinFds == MaxFds
                ? $"{Request} carries {fdCount} fds, expected {MinFds}"
                : $"{Request} carries {fdCount} fds, expected {MinFds} to {MaxFds}";
        return null;
    }
}

/// <summary>The framing rules of every front-end request of the spec.</summary>
internal static class RequestTable
{
    private static readonly RequestSpec?[] Specs = Build();

    public static RequestSpec? Get(uint request) => request < Specs.Length ? Specs[request] : null;

    private static RequestSpec?[] Build()
    {
        var t = new RequestSpec?[(int)VhostUserRequest.CheckDeviceState + 1];
        void Add(VhostUserRequest r, SizeRule rule, int size, int minFds = 0, int maxFds = 0, bool reply = false) =>
            t[(int)r] = new RequestSpec(r, rule, size, minFds, maxFds, reply);

        // Some front-ends send a u64 zero with bodiless requests; accept 0 or 8 bytes there.
        Add(VhostUserRequest.GetFeatures, SizeRule.Any, 0, reply: true);
        Add(VhostUserRequest.SetFeatures, SizeRule.Exact, Payload.U64);
        Add(VhostUserRequest.SetOwner, SizeRule.Any, 0);
        Add(VhostUserRequest.ResetOwner, SizeRule.Any, 0);
        Add(VhostUserRequest.SetMemTable, SizeRule.AtLeast, Payload.MemoryTableHeader, 0, Payload.MaxMemoryTableRegions);
        Add(VhostUserRequest.SetLogBase, SizeRule.Exact, Payload.Log, 1, 1, reply: true);
        Add(VhostUserRequest.SetLogFd, SizeRule.Any, 0, 1, 1);
        Add(VhostUserRequest.SetVringNum, SizeRule.Exact, Payload.VringState);
        Add(VhostUserRequest.SetVringAddr, SizeRule.Exact, Payload.VringAddress);
        Add(VhostUserRequest.SetVringBase, SizeRule.Exact, Payload.VringState);
        Add(VhostUserRequest.GetVringBase, SizeRule.Exact, Payload.VringState, reply: true);
        Add(VhostUserRequest.SetVringKick, SizeRule.Exact, Payload.U64, 0, 1);
        Add(VhostUserRequest.SetVringCall, SizeRule.Exact, Payload.U64, 0, 1);
        Add(VhostUserRequest.SetVringErr, SizeRule.Exact, Payload.U64, 0, 1);
        Add(VhostUserRequest.GetProtocolFeatures, SizeRule.Any, 0, reply: true);
        Add(VhostUserRequest.SetProtocolFeatures, SizeRule.Exact, Payload.U64);
        Add(VhostUserRequest.GetQueueNum, SizeRule.Any, 0, reply: true);
        Add(VhostUserRequest.SetVringEnable, SizeRule.Exact, Payload.VringState);
        Add(VhostUserRequest.SendRarp, SizeRule.Exact, Payload.U64);
        Add(VhostUserRequest.NetSetMtu, SizeRule.Exact, Payload.U64);
        Add(VhostUserRequest.SetBackendReqFd, SizeRule.Any, 0, 1, 1);
        Add(VhostUserRequest.IotlbMsg, SizeRule.AtLeast, Payload.Iotlb);
        Add(VhostUserRequest.SetVringEndian, SizeRule.Exact, Payload.VringState);
        Add(VhostUserRequest.GetConfig, SizeRule.AtLeast, Payload.ConfigHeader, reply: true);
        Add(VhostUserRequest.SetConfig, SizeRule.AtLeast, Payload.ConfigHeader);
        Add(VhostUserRequest.CreateCryptoSession, SizeRule.Any, 0, reply: true);
        Add(VhostUserRequest.CloseCryptoSession, SizeRule.Exact, Payload.U64);
        Add(VhostUserRequest.PostcopyAdvise, SizeRule.Any, 0, reply: true);
        Add(VhostUserRequest.PostcopyListen, SizeRule.Any, 0);
        Add(VhostUserRequest.PostcopyEnd, SizeRule.Any, 0, reply: true);
        Add(VhostUserRequest.GetInflightFd, SizeRule.AtLeast, Payload.Inflight, reply: true);
        Add(VhostUserRequest.SetInflightFd, SizeRule.AtLeast, Payload.Inflight, 1, 1);
        Add(VhostUserRequest.GpuSetSocket, SizeRule.Any, 0, 1, 1);
        Add(VhostUserRequest.ResetDevice, SizeRule.Any, 0);
        Add(VhostUserRequest.VringKick, SizeRule.Exact, Payload.VringState);
        Add(VhostUserRequest.GetMaxMemSlots, SizeRule.Any, 0, reply: true);
        Add(VhostUserRequest.AddMemReg, SizeRule.Exact, Payload.SingleMemoryRegion, 1, 1);
        Add(VhostUserRequest.RemMemReg, SizeRule.Exact, Payload.SingleMemoryRegion, 0, 1);
        Add(VhostUserRequest.SetStatus, SizeRule.Exact, Payload.U64);
        Add(VhostUserRequest.GetStatus, SizeRule.Any, 0, reply: true);
        Add(VhostUserRequest.GetSharedObject, SizeRule.Any, 0, reply: true);
        Add(VhostUserRequest.SetDeviceStateFd, SizeRule.Any, 0, 1, 1, reply: true);
        Add(VhostUserRequest.CheckDeviceState, SizeRule.Any, 0, reply: true);
        return t;
    }
}
