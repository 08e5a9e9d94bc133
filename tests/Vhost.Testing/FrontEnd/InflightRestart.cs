using Vhost.Interop;

namespace Vhost.Testing.FrontEnd;

/// <summary>
/// What QEMU does with an in-flight area across a back-end restart: at the first start it asks the back-end
/// for the area (GET_INFLIGHT_FD) and hands it straight back (SET_INFLIGHT_FD); after losing the back-end it
/// gives the next one the same area, then sets the queue up again on the same rings and eventfds.
/// </summary>
internal static class InflightRestart
{
    /// <summary>GET_INFLIGHT_FD, then SET_INFLIGHT_FD with what came back; the caller owns the fd.</summary>
    public static (InflightPayload Info, SafeFd Fd) ShareArea(TestFrontEnd fe, ushort queues, ushort queueSize)
    {
        var (info, fd) = fe.GetInflightFd(queues, queueSize);
        if (fd is null) throw new InvalidOperationException("GET_INFLIGHT_FD brought no fd");
        Check(fe.SetInflightFd(info, fd, needReply: true), "SET_INFLIGHT_FD");
        return (info, fd);
    }

    /// <summary>
    /// For the next back-end (after negotiation and the memory table): the same area, then queue
    /// <paramref name="q"/> on its old rings and eventfds with <paramref name="ringBase"/>, enabled.
    /// </summary>
    public static void Resume(TestFrontEnd fe, InflightPayload info, SafeFd area, QueueSetup q, uint ringBase)
    {
        Check(fe.SetInflightFd(info, area, needReply: true), "SET_INFLIGHT_FD");
        Check(fe.SetVringNum(q.Index, q.Size, needReply: true), "SET_VRING_NUM");
        Check(fe.SetVringAddr(q.Address, needReply: true), "SET_VRING_ADDR");
        Check(fe.SetVringBase(q.Index, ringBase, needReply: true), "SET_VRING_BASE");
        Check(fe.SetVringCall(q.Index, q.CallFd, needReply: true), "SET_VRING_CALL");
        Check(fe.SetVringKick(q.Index, q.KickFd, needReply: true), "SET_VRING_KICK");
        Check(fe.SetVringEnable(q.Index, true, needReply: true), "SET_VRING_ENABLE");
    }

    private static void Check(ulong? ack, string what)
    {
        if (ack != 0) throw new InvalidOperationException($"{what} refused (ack {ack?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none"})");
    }
}
