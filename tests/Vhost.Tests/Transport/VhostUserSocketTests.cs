using Vhost.Device;
using Vhost.Testing.FrontEnd;
using Vhost.Transport;

namespace Vhost.Tests.Transport;

public sealed class VhostUserSocketTests
{
    [Fact]
    public void StartRefusesToReplaceAFileThatIsNotASocket()
    {
        string path = TestFrontEndListener.TempPath();
        File.WriteAllText(path, "precious");
        try
        {
            var socket = new VhostUserSocket(new VhostSocketOptions { Path = path });
            var e = Assert.ThrowsAny<IOException>(socket.Start);
            Assert.Contains("not a socket", e.Message, StringComparison.Ordinal);
            socket.Dispose();
            Assert.Equal("precious", File.ReadAllText(path));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void StartReplacesAStaleSocket()
    {
        string path = TestFrontEndListener.TempPath();
        // a listener disposed without unlinking leaves a socket file nobody listens on
        Vhost.Interop.UnixSocket.Listen(path).Dispose();
        Assert.True(File.Exists(path));
        using var socket = new VhostUserSocket(new VhostSocketOptions { Path = path });
        socket.Start();
        using var fe = TestFrontEnd.Connect(path, TimeSpan.FromSeconds(5));
        Assert.NotEqual(0UL, fe.GetFeatures());
    }

    [Fact]
    public void DisposeRacingAReconnectLeavesNoDevice()
    {
        using var listener = TestFrontEndListener.Listen(TestFrontEndListener.TempPath());
        using var accepted = new SemaphoreSlim(0);
        var held = new List<TestFrontEnd>();
        var heldLock = new Lock();
        bool hold = false, stop = false;
        // the front-end drops every connection at once (the back-end reconnects at once), or keeps it while told to hold
        var acceptor = new Thread(() =>
        {
            while (!Volatile.Read(ref stop))
            {
                TestFrontEnd fe;
                try
                {
                    fe = listener.Accept(TimeSpan.FromMilliseconds(50));
                }
                catch (TimeoutException)
                {
                    continue;
                }
                catch (Exception e) when (e is ObjectDisposedException or IOException)
                {
                    return;
                }
                lock (heldLock)
                {
                    if (Volatile.Read(ref hold)) held.Add(fe);
                    else fe.Dispose();
                }
                accepted.Release();
            }
        }) { IsBackground = true };
        acceptor.Start();
        try
        {
            for (int round = 0; round < 200; round++)
            {
                var socket = new VhostUserSocket(new VhostSocketOptions
                {
                    Path = listener.Path, Client = true, ReconnectInterval = TimeSpan.Zero,
                });
                socket.Start();
                // let it go round a few reconnects so Dispose lands at varying points of the loop
                for (int i = 0; i <= round % 4; i++) Assert.True(accepted.Wait(TimeSpan.FromSeconds(5)), "the back-end stopped reconnecting");
                Volatile.Write(ref hold, true);
                socket.Dispose();
                var left = VhostDevice.All.Where(d => d.SocketPath == listener.Path).Select(d => d.Id).ToArray();
                Assert.True(left.Length == 0, $"round {round}: device(s) {string.Join(", ", left)} outlived Dispose");
                lock (heldLock)
                {
                    foreach (var fe in held)
                    {
                        Assert.True(fe.IsClosedByPeer(TimeSpan.FromSeconds(5)), $"round {round}: a connection outlived Dispose");
                        fe.Dispose();
                    }
                    held.Clear();
                    Volatile.Write(ref hold, false);
                }
                while (accepted.Wait(0)) { }
            }
        }
        finally
        {
            Volatile.Write(ref stop, true);
            acceptor.Join();
        }
    }
}
