using Vhost.Interop;
using Vhost.Protocol;
using Vhost.Testing.FrontEnd;

namespace Vhost.Tests.Hostile;

[Collection(HostileCollection.Name)]
public sealed class FramingTests
{
    [Fact]
    public void SizeFieldLargerThanPayloadThenStall_OtherDeviceWorks_EofClosesIt()
    {
        using var s = new Scene();
        using (var fe = s.Connect())
        {
            fe.SendWithSizeField(VhostUserRequest.SetFeatures, 64, VhostUserPayload.U64(0));
            // the back-end waits for the rest on this connection's thread only
            Assert.True(fe.IsSilent(TimeSpan.FromMilliseconds(200)));
            s.AssertGoodDeviceWorks();
            fe.Shutdown();
            Scene.AssertClosed(fe);
        }
        s.AssertOneError("connection ended inside the payload");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void SizeFieldAboveTheMaximumIsRefusedAtOnce()
    {
        using var s = new Scene();
        using (var fe = s.Connect())
        {
            fe.SendHeaderAndStall(VhostUserRequest.SetFeatures, 1 << 20);
            Scene.AssertClosed(fe);
        }
        s.AssertOneError("claims a 1048576-byte payload");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void SizeFieldSmallerThanPayload()
    {
        using var s = new Scene();
        using (var fe = s.Connect())
        {
            fe.SendWithSizeField(VhostUserRequest.SetVringNum, 4, VhostUserPayload.VringState(0, 64));
            Scene.AssertClosed(fe);
        }
        s.AssertOneError("SetVringNum payload is 4 bytes, expected 8");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void TruncatedMessageThenClose()
    {
        using var s = new Scene();
        using (var fe = s.Connect())
        {
            fe.SendTruncatedThenClose(VhostUserRequest.SetVringAddr, new byte[40], 10);
            Scene.AssertClosed(fe);
        }
        s.AssertOneError("connection ended inside the payload of message 9");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void PartialHeaderThenClose()
    {
        using var s = new Scene();
        using (var fe = s.Connect())
        {
            fe.SendPartialHeader(VhostUserRequest.GetFeatures, 7);
            fe.Shutdown();
            Scene.AssertClosed(fe);
        }
        s.AssertOneError("connection ended inside a message header");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(999u)]
    [InlineData(0xffffffffu)]
    public void UnknownRequestNumber(uint request)
    {
        using var s = new Scene();
        using (var fe = s.Connect())
        {
            fe.Send(request, VhostUserFlags.Version, []);
            Scene.AssertClosed(fe);
        }
        s.AssertOneError($"unknown request {request}");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(2u)]
    [InlineData(3u)]
    public void WrongVersionBits(uint version)
    {
        using var s = new Scene();
        using (var fe = s.Connect())
        {
            fe.Send((uint)VhostUserRequest.GetFeatures, version, []);
            Scene.AssertClosed(fe);
        }
        s.AssertOneError($"has version {version}, expected 1");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void ReplyBitSet()
    {
        using var s = new Scene();
        using (var fe = s.Connect())
        {
            fe.Send((uint)VhostUserRequest.GetFeatures, VhostUserFlags.Version | VhostUserFlags.Reply, []);
            Scene.AssertClosed(fe);
        }
        s.AssertOneError("has the reply flag set");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void FdsOnAMessageThatTakesNone()
    {
        using var s = new Scene();
        using (var fe = s.Connect())
        {
            fe.SendWithJunkFds(VhostUserRequest.SetVringNum, VhostUserPayload.VringState(0, 64), 3);
            Scene.AssertClosed(fe);
        }
        s.AssertOneError("SetVringNum carries 3 fds, expected 0");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Theory]
    [InlineData(9)]
    [InlineData(64)]
    [InlineData(253)]
    public void MoreThanEightFds(int count)
    {
        using var s = new Scene();
        using (var fe = s.Connect())
        {
            fe.SendWithJunkFds(VhostUserRequest.SetMemTable, VhostUserPayload.MemoryTable([]), count);
            Scene.AssertClosed(fe);
        }
        s.AssertOneError("carries more than 8 fds");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void NoFdWhereOneIsRequired()
    {
        using var s = new Scene();
        using (var fe = s.Connect())
        {
            fe.Send(VhostUserRequest.AddMemReg, VhostUserPayload.SingleRegion(new(0, 4096, 0x7000_0000, 0)));
            Scene.AssertClosed(fe);
        }
        s.AssertOneError("AddMemReg carries 0 fds, expected 1");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void VringCallWithoutFdAndWithoutTheNoFdFlag()
    {
        using var s = new Scene();
        using (var fe = s.Connect())
        {
            fe.Send(VhostUserRequest.SetVringCall, VhostUserPayload.U64(0));
            Scene.AssertClosed(fe);
        }
        s.AssertOneError("SetVringCall needs one fd and carries 0");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void MemTableWithFewerFdsThanRegions()
    {
        using var s = new Scene();
        using (var fe = s.Connect())
        using (var mem = new FrontEndMemory())
        {
            var a = mem.AddRegion(0x10_0000, 1 << 16);
            var b = mem.AddRegion(0x20_0000, 1 << 16);
            fe.SendWithFds(VhostUserRequest.SetMemTable, VhostUserPayload.MemoryTable([a.Info, b.Info]), [a.Fd]);
            Scene.AssertClosed(fe);
        }
        s.AssertOneError("describes 2 regions but carries 1 fds");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void PipeOrSocketFdWhereMemoryIsExpected(bool socket)
    {
        using var s = new Scene();
        using (var fe = s.Connect())
        using (var mem = new FrontEndMemory())
        {
            var setup = new DeviceSetup(fe, memory: mem);
            setup.Negotiate();
            if (socket) mem.AddSocketRegion(0x10_0000, 1 << 16);
            else mem.AddPipeRegion(0x10_0000, 1 << 16);
            // regression: formatting the fd's mode threw FormatException, so this closed the connection instead of a NACK
            Scene.AssertNack(fe.SetMemTable(mem, needReply: true));
            Assert.Equal(0, s.WaitOtherDevice().Memory.Count);
        }
        s.AssertOneError("region fd is not a memory file");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }
}
