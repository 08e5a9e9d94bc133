using System.Diagnostics;
using Vhost.Interop;
using Vhost.Protocol;
using Vhost.Testing.FrontEnd;

namespace Vhost.Tests.FrontEnd;

public class MisbehaviourTests
{
    private static readonly TimeSpan Long = TimeSpan.FromSeconds(5);

    private static byte[] ReadAll(UnixSocket s, out bool eof)
    {
        var buf = new byte[1 << 16];
        var fds = new List<SafeFd>();
        int total = 0;
        eof = false;
        while (s.WaitReadable(150))
        {
            int n = s.Receive(buf.AsSpan(total), fds, out _);
            if (n == 0) { eof = true; break; }
            total += n;
        }
        foreach (var fd in fds) fd.Dispose();
        return buf[..total];
    }

    [Fact]
    public void Header_alone_claims_a_payload_that_never_comes()
    {
        using var fe = TestFrontEnd.CreatePair(out var back);
        using (back)
        {
            fe.SendHeaderAndStall(VhostUserRequest.SetMemTable, claimedSize: 40);
            var bytes = ReadAll(back, out bool eof);
            Assert.False(eof);
            Assert.Equal(new VhostUserHeader(5, 1, 40), VhostUserHeader.Read(bytes));
            Assert.Equal(12, bytes.Length);
        }
    }

    [Fact]
    public void Partial_header()
    {
        using var fe = TestFrontEnd.CreatePair(out var back);
        using (back)
        {
            fe.SendPartialHeader(VhostUserRequest.GetFeatures, 7);
            Assert.Equal(7, ReadAll(back, out _).Length);
        }
    }

    [Fact]
    public void Truncated_payload_then_eof()
    {
        using var fe = TestFrontEnd.CreatePair(out var back);
        using (back)
        {
            fe.SendTruncatedThenClose(VhostUserRequest.SetVringAddr, new byte[40], sentBytes: 10);
            var bytes = ReadAll(back, out bool eof);
            Assert.True(eof);
            Assert.Equal(22, bytes.Length);
            Assert.Equal(40u, VhostUserHeader.Read(bytes).Size);
        }
    }

    [Fact]
    public void Size_field_larger_or_smaller_than_the_bytes()
    {
        using var fe = TestFrontEnd.CreatePair(out var back);
        using (back)
        {
            fe.SendWithSizeField(VhostUserRequest.SetFeatures, 4, VhostUserPayload.U64(1));
            fe.SendWithSizeField(VhostUserRequest.SetFeatures, 4096, VhostUserPayload.U64(2));
            var bytes = ReadAll(back, out _);
            Assert.Equal(40, bytes.Length);
            Assert.Equal(4u, VhostUserHeader.Read(bytes).Size);
            Assert.Equal(4096u, VhostUserHeader.Read(bytes.AsSpan(20)).Size);
        }
    }

    [Fact]
    public void Flood_without_reading_stops_at_the_timeout_when_nobody_reads()
    {
        using var fe = TestFrontEnd.CreatePair(out var back);
        using (back)
        {
            var sw = Stopwatch.StartNew();
            int sent = fe.SendWithoutReading(VhostUserRequest.GetFeatures, default, count: 10_000_000, TimeSpan.FromMilliseconds(300));
            Assert.InRange(sent, 1, 9_999_999);
            Assert.True(sw.Elapsed < Long);
        }
    }

    [Fact]
    public void Flood_completes_when_the_peer_drains()
    {
        using var fe = TestFrontEnd.CreatePair(out var backSocket);
        using var back = new ScriptedBackEnd(backSocket).Start();
        int sent = fe.SendWithoutReading(VhostUserRequest.SetOwner, default, count: 1000, Long);
        Assert.Equal(1000, sent);
        Assert.True(back.WaitFor(1000, Long));
    }

    [Fact]
    public void Connect_and_close_loop()
    {
        string path = TestFrontEndListener.TempPath();
        using var listener = UnixSocket.Listen(path);
        int accepted = 0;
        var acceptor = new Thread(() =>
        {
            for (int i = 0; i < 20; i++)
            {
                using var s = listener.Accept();
                if (s is null) return;
                accepted++;
            }
        });
        acceptor.Start();
        int connected = TestFrontEnd.ConnectAndCloseLoop(path, 20, Long, fe => fe.SendPartialHeader(VhostUserRequest.SetOwner, 3));
        Assert.Equal(20, connected);
        Assert.True(acceptor.Join(Long));
        Assert.Equal(20, accepted);
        File.Delete(path);
    }
}
