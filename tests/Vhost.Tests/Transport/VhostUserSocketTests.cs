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
}
