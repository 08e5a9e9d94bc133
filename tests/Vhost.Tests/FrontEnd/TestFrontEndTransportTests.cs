using Vhost.Interop;
using Vhost.Protocol;
using Vhost.Testing.FrontEnd;

namespace Vhost.Tests.FrontEnd;

public class TestFrontEndTransportTests
{
    private static readonly TimeSpan Short = TimeSpan.FromMilliseconds(200);
    private static readonly TimeSpan Long = TimeSpan.FromSeconds(5);

    /// <summary>Reads exactly what is available within a short while, with fds.</summary>
    private static (byte[] Bytes, List<SafeFd> Fds, bool Truncated) Drain(UnixSocket s, int max = 4096)
    {
        var buf = new byte[max];
        var fds = new List<SafeFd>();
        int total = 0;
        bool truncated = false;
        while (total < max && s.WaitReadable(100))
        {
            int n = s.Receive(buf.AsSpan(total), fds, out bool t);
            truncated |= t;
            if (n == 0) break;
            total += n;
        }
        return (buf[..total], fds, truncated);
    }

    [Fact]
    public void Sent_fds_arrive_and_refer_to_the_same_eventfd()
    {
        using var fe = TestFrontEnd.CreatePair(out var back);
        using (back)
        {
            using var efd = EventFd.Create(nonBlocking: true);
            fe.SetVringCall(3, efd);
            var (bytes, fds, truncated) = Drain(back);
            Assert.False(truncated);
            var m = VhostUserMessage.Decode(bytes);
            Assert.Equal(VhostUserRequest.SetVringCall, m.Request);
            Assert.Equal(3UL, m.ReadU64());
            var received = Assert.Single(fds);
            using (received)
            {
                Assert.True(EventFd.Signal(received));
                Assert.Equal(1UL, EventFd.Consume(efd));
            }
        }
    }

    [Fact]
    public void Polling_flag_is_sent_without_an_fd()
    {
        using var fe = TestFrontEnd.CreatePair(out var back);
        using (back)
        {
            fe.SetVringKick(1, null);
            var (bytes, fds, _) = Drain(back);
            Assert.Empty(fds);
            Assert.Equal(0x101UL, VhostUserMessage.Decode(bytes).ReadU64());
        }
    }

    [Fact]
    public void More_fds_than_the_protocol_allows_can_be_attached_and_the_excess_is_reported()
    {
        using var fe = TestFrontEnd.CreatePair(out var back);
        using (back)
        {
            fe.SendWithJunkFds(VhostUserRequest.SetOwner, default, count: 12);
            var (bytes, fds, truncated) = Drain(back);
            Assert.Equal(VhostUserHeader.Length, bytes.Length);
            Assert.Equal(UnixSocket.MaxFds, fds.Count);
            Assert.True(truncated);
            foreach (var fd in fds) fd.Dispose();
        }
    }

    [Fact]
    public void ReceiveReply_reassembles_a_reply_sent_in_pieces_with_its_fd()
    {
        using var fe = TestFrontEnd.CreatePair(out var back);
        using (back)
        using (var efd = EventFd.Create())
        {
            var reply = VhostUserMessage.Encode((uint)VhostUserRequest.GetInflightFd, VhostUserFlags.Version | VhostUserFlags.Reply,
                VhostUserPayload.Inflight(new InflightPayload(4096, 0, 2, 256)));
            back.Send(reply.AsSpan(0, 5), [efd]);
            var sender = new Thread(() =>
            {
                Thread.Sleep(50);
                back.Send(reply.AsSpan(5));
            });
            sender.Start();
            using var m = fe.ReceiveReply(Long);
            Assert.True(sender.Join(Long));
            Assert.NotNull(m);
            Assert.True(m.Header.IsReply);
            Assert.Equal(new InflightPayload(4096, 0, 2, 256), VhostUserPayload.ReadInflight(m.Payload));
            Assert.Single(m.Fds);
        }
    }

    [Fact]
    public void ReceiveReply_times_out_returns_null_on_eof_and_throws_on_eof_inside_a_message()
    {
        using var fe = TestFrontEnd.CreatePair(out var back);
        Assert.Throws<TimeoutException>(() => fe.ReceiveReply(Short));
        back.Send(new VhostUserHeader(1, 5, 8).ToArray().AsSpan(0, 12));
        back.Send(new byte[3]);
        back.Dispose();
        Assert.Throws<EndOfStreamException>(() => fe.ReceiveReply(Long));

        using var fe2 = TestFrontEnd.CreatePair(out var back2);
        back2.Dispose();
        Assert.Null(fe2.ReceiveReply(Long));
    }

    [Fact]
    public void IsClosedByPeer_discards_data_and_sees_eof()
    {
        using var fe = TestFrontEnd.CreatePair(out var back);
        Assert.False(fe.IsClosedByPeer(Short));
        back.Send(new byte[100]);
        Assert.False(fe.IsClosedByPeer(Short));
        back.Dispose();
        Assert.True(fe.IsClosedByPeer(Long));
    }

    [Fact]
    public void Typed_requests_and_replies_against_a_scripted_back_end()
    {
        using var fe = TestFrontEnd.CreatePair(out var backSocket);
        using var back = new ScriptedBackEnd(backSocket) { Nack = [VhostUserRequest.NetSetMtu] }.Start();

        Assert.Equal(back.Features, fe.GetFeatures());
        Assert.Equal(back.ProtocolFeatures, fe.GetProtocolFeatures());
        fe.SetProtocolFeatures(back.ProtocolFeatures);
        Assert.True(fe.ReplyAckNegotiated);
        Assert.Equal(0UL, fe.SetOwner(needReply: true));
        Assert.Null(fe.SetFeatures(back.Features));
        Assert.Equal(1UL, fe.NetSetMtu(1500, needReply: true));
        Assert.Equal(4UL, fe.GetQueueNum());
        Assert.Equal(32UL, fe.GetMaxMemSlots());
        Assert.Equal(42u, fe.GetVringBase(1));
        var config = fe.GetConfig(offset: 8, size: 4);
        Assert.NotNull(config);
        Assert.Equal(new byte[] { 8, 9, 10, 11 }, config.Data);
        fe.SetStatus(VirtioDeviceStatus.Acknowledge | VirtioDeviceStatus.Driver);
        Assert.Equal(VirtioDeviceStatus.Acknowledge | VirtioDeviceStatus.Driver, fe.GetStatus());
        fe.SendRarp([0x52, 0x54, 0, 1, 2, 3]);
        using (var channel = fe.OpenBackendChannel()) Assert.NotNull(channel);
        Assert.Equal(0UL, fe.SendIotlb(new IotlbPayload(0, 0x1000, 0x5000, IotlbPayload.PermRead, IotlbPayload.TypeUpdate)));

        Assert.True(back.WaitFor(15, Long));
        var requests = back.ReceivedList.Select(m => m.Request).ToArray();
        Assert.Equal(
            [
                VhostUserRequest.GetFeatures, VhostUserRequest.GetProtocolFeatures, VhostUserRequest.SetProtocolFeatures,
                VhostUserRequest.SetOwner, VhostUserRequest.SetFeatures, VhostUserRequest.NetSetMtu, VhostUserRequest.GetQueueNum,
                VhostUserRequest.GetMaxMemSlots, VhostUserRequest.GetVringBase, VhostUserRequest.GetConfig, VhostUserRequest.SetStatus,
                VhostUserRequest.GetStatus, VhostUserRequest.SendRarp, VhostUserRequest.SetBackendReqFd, VhostUserRequest.IotlbMsg,
            ],
            requests);
        var backendReq = back.ReceivedList.Single(m => m.Request == VhostUserRequest.SetBackendReqFd);
        Assert.Equal(0u, backendReq.Header.Size);
        Assert.Single(backendReq.Fds);
        Assert.True(back.ReceivedList.Single(m => m.Request == VhostUserRequest.SetOwner).Header.NeedsReply);
    }

    [Fact]
    public void Mem_table_sends_one_fd_per_region_and_add_rem_use_single_region_layout()
    {
        using var mem = new FrontEndMemory();
        mem.AddRegion(0, 0x1000);
        mem.AddRegion(0x10000, 0x2000);
        using var fe = TestFrontEnd.CreatePair(out var backSocket);
        using var back = new ScriptedBackEnd(backSocket).Start();

        fe.SetMemTable(mem);
        var extra = mem.AddRegion(0x40000, 0x1000);
        fe.AddMemReg(extra);
        fe.RemMemReg(extra.Info);

        Assert.True(back.WaitFor(3, Long));
        var msgs = back.ReceivedList;
        Assert.Equal(2, msgs[0].Fds.Count);
        Assert.Equal(8u + 2 * 32, msgs[0].Header.Size);
        var (count, regions) = VhostUserPayload.ReadMemoryTable(msgs[0].Payload);
        Assert.Equal(2u, count);
        Assert.Equal(mem.Regions[1].Info, regions[1]);
        Assert.Single(msgs[1].Fds);
        Assert.Equal(extra.Info, VhostUserPayload.ReadSingleRegion(msgs[1].Payload));
        Assert.Empty(msgs[2].Fds);
        Assert.Equal(40u, msgs[2].Header.Size);
    }

    [Fact]
    public void Connect_retries_until_a_listener_appears()
    {
        string path = TestFrontEndListener.TempPath();
        UnixSocket? late = null;
        var starter = new Thread(() =>
        {
            Thread.Sleep(100);
            late = UnixSocket.Listen(path);
        });
        starter.Start();
        using var fe = TestFrontEnd.Connect(path, Long);
        Assert.True(starter.Join(Long));
        using var listener = late!;
        using var accepted = listener.Accept();
        Assert.NotNull(accepted);
        File.Delete(path);
    }

    [Fact]
    public void Connect_gives_up_after_the_timeout()
    {
        Assert.Throws<TimeoutException>(() => TestFrontEnd.Connect(TestFrontEndListener.TempPath(), Short));
    }

    [Fact]
    public void Listener_accepts_a_back_end_in_client_mode()
    {
        string path = TestFrontEndListener.TempPath();
        using (var listener = TestFrontEndListener.Listen(path))
        {
            Assert.Throws<TimeoutException>(() => listener.Accept(Short));
            using var client = UnixSocket.TryConnect(path, out _);
            Assert.NotNull(client);
            using var fe = listener.Accept(Long);
            client.Send(VhostUserMessage.Encode(VhostUserRequest.GetFeatures, VhostUserPayload.U64(7)));
            using var m = fe.ReceiveReply(Long);
            Assert.Equal(7UL, m!.ReadU64());
        }
        Assert.False(File.Exists(path));
    }
}
