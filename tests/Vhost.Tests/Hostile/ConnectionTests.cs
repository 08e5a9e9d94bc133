using Vhost.Protocol;
using Vhost.Testing.FrontEnd;

namespace Vhost.Tests.Hostile;

[Collection(HostileCollection.Name)]
public sealed class ConnectionTests
{
    [Fact]
    public void AThousandConnectsAndDisconnectsLeaveNothingBehind()
    {
        using var s = new Scene();
        int connected = TestFrontEnd.ConnectAndCloseLoop(s.Be.Path, 1000, Scene.T);
        Assert.Equal(1000, connected);
        int Disconnects() => s.Be.Logs.Lines.Count(l => l.Text.Contains("disconnected", StringComparison.Ordinal));
        var end = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (Disconnects() < 1000 && DateTime.UtcNow < end) Thread.Sleep(20);
        Assert.Equal(1000, Disconnects());
        // closing at once is the front-end's right: nothing to log as an error
        Assert.Empty(s.Be.Logs.Errors);
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
        // and a new well-behaved device still comes up
        var (fe, setup, dev, _) = s.BringUp(packed: false);
        using (fe)
        using (setup) Assert.True(dev.IsRunning);
        s.AssertReleased();
    }

    [Fact]
    public void AThousandHalfHeadersThenDisconnects()
    {
        using var s = new Scene();
        int connected = TestFrontEnd.ConnectAndCloseLoop(s.Be.Path, 1000, Scene.T, fe => fe.SendPartialHeader(VhostUserRequest.GetFeatures, 5));
        Assert.Equal(1000, connected);
        // the accept loop may still be behind the client: wait for every connection's one line
        int Lines() => s.Be.Logs.Errors.Count(e => e.Contains("connection ended inside a message header", StringComparison.Ordinal));
        var end = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (Lines() < 1000 && DateTime.UtcNow < end) Thread.Sleep(20);
        Assert.Equal(1000, Lines());
        Assert.Equal(1000, s.Be.Logs.Errors.Count());
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void AStalledHalfMessageDoesNotBlockOtherDevices()
    {
        using var s = new Scene();
        using (var stalled = s.Connect())
        {
            stalled.SendHeaderAndStall(VhostUserRequest.SetMemTable, 200);
            // the stalled connection must be known before BringUp looks for "the new device"
            var end = DateTime.UtcNow + Scene.T;
            while (s.Be.Socket.Devices.Count < 2 && DateTime.UtcNow < end) Thread.Sleep(5);
            Assert.Equal(2, s.Be.Socket.Devices.Count);
            // another device comes up and moves data while the stalled connection's thread waits
            var (fe, setup, dev, ring) = s.BringUp(packed: true);
            using (fe)
            using (setup)
            {
                ring.Add(new Vhost.Testing.Rings.DriverBuffer(setup.Memory.Allocate(64), 64, true));
                Assert.Equal(1, Scene.PopAndFlush(dev));
            }
            s.AssertGoodDeviceWorks();
            Assert.Empty(s.Be.Logs.Errors);
        }
        s.AssertOneError("connection ended inside the payload of message 5");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void AFrontEndThatNeverReadsReplies()
    {
        using var s = new Scene();
        using (var fe = s.Connect())
        {
            // GET_FEATURES replies 20 bytes each: enough of them fill both socket buffers and the back-end's
            // send blocks; the flood is then cut off and the blocked send must end with the connection
            int sent = fe.SendWithoutReading(VhostUserRequest.GetFeatures, [], 200_000, TimeSpan.FromSeconds(2));
            Assert.True(sent > 0);
            s.AssertGoodDeviceWorks();
        }
        s.AssertReleased();
        Assert.Empty(s.Be.Logs.Errors); // a peer that went away is not an error of ours
        s.AssertGoodDeviceWorks();
    }
}
