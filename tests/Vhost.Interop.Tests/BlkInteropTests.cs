using System.Diagnostics;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using Vhost.Blk;
using Vhost.Interop.Tests.Peers;
using Vhost.Transport;
using Xunit.Abstractions;

namespace Vhost.Interop.Tests;

/// <summary>A Linux guest under QEMU uses our vhost-user-blk back-end (in process) and qemu-storage-daemon
/// for comparison.</summary>
[Collection(PeersCollection.Name)]
public sealed class BlkInteropTests(ITestOutputHelper output)
{
    private static readonly TimeSpan GuestTimeout = TimeSpan.FromSeconds(120);

    private async Task<GuestResult> RunGuest(PeerTempDir dir, string script, string socket, int queues)
    {
        string[] args = [.. QemuGuest.BlkDeviceArgs(socket, queues), .. (queues > 1 ? new[] { "-smp", queues.ToString(System.Globalization.CultureInfo.InvariantCulture) } : [])];
        var r = await QemuGuest.RunAsync(script, args, dir, GuestTimeout);
        output.WriteLine(r.ToString());
        return r;
    }

    private static (BlkDevice Dev, VhostUserSocket Sock) Serve(IBlockStorage storage, int queues, string socket)
    {
        var dev = new BlkDevice(storage, queues, NullLogger.Instance);
        var sock = new VhostUserSocket(dev.Options(socket, false, null));
        sock.Start();
        return (dev, sock);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task GuestIntegrityOnMemoryDisk(int queues)
    {
        using var dir = new PeerTempDir("blk");
        var socket = dir.File("blk.sock");
        var (dev, sock) = Serve(new MemoryStorage(64 << 20), queues, socket);
        using (dev) using (sock)
        {
            var r = await RunGuest(dir, SharedHarness.Script("guest-tests/blk-integrity.sh"), socket, queues);
            Assert.Equal(0, r.ExitCode);
            Assert.Contains($"queues={queues}", r.Console, StringComparison.Ordinal);
            Assert.True(dev.Stats.BytesWritten >= 8 << 20);
            Assert.Equal(0, dev.Stats.Errors);
        }
    }

    [Fact]
    public async Task GuestWritesReachTheImageFile()
    {
        using var dir = new PeerTempDir("blk");
        var socket = dir.File("blk.sock");
        var image = QemuStorageDaemon.CreateImage(dir, 32 << 20);
        var (dev, sock) = Serve(new FileStorage(image, false), 1, socket);
        using (sock) using (dev)
        {
            var r = await RunGuest(dir, SharedHarness.LocalGuestScript("blk-pattern.sh"), socket, 1);
            Assert.Equal(0, r.ExitCode);
        }
        dev.Storage.Dispose();
        var want = new StringBuilder();
        while (want.Length < 1 << 20) want.Append("vhost-blk-pattern\n");
        var bytes = File.ReadAllBytes(image);
        Assert.Equal(Encoding.ASCII.GetBytes(want.ToString(0, 1 << 20)), bytes.AsSpan(0, 1 << 20).ToArray());
        Assert.All(bytes.AsSpan(1 << 20, 4096).ToArray(), b => Assert.Equal(0, b));
    }

    [Fact]
    public async Task ReadOnlyDeviceRefusesGuestWrites()
    {
        using var dir = new PeerTempDir("blk");
        var socket = dir.File("blk.sock");
        var (dev, sock) = Serve(new MemoryStorage(16 << 20, readOnly: true), 1, socket);
        using (dev) using (sock)
        {
            var r = await RunGuest(dir, SharedHarness.LocalGuestScript("blk-readonly.sh"), socket, 1);
            Assert.Equal(0, r.ExitCode);
            Assert.Contains("write refused", r.Console, StringComparison.Ordinal);
            Assert.Equal(0, dev.Stats.BytesWritten);
        }
    }

    [Fact]
    public async Task SameGuestTestAgainstQemuStorageDaemon()
    {
        using var dir = new PeerTempDir("blk");
        var socket = dir.File("qsd.sock");
        var image = QemuStorageDaemon.CreateImage(dir, 64 << 20);
        using var qsd = QemuStorageDaemon.Start(image, socket, dir, queues: 1);
        var sw = Stopwatch.StartNew();
        var r = await RunGuest(dir, SharedHarness.Script("guest-tests/blk-integrity.sh"), socket, 1);
        output.WriteLine($"qemu-storage-daemon wall time {sw.Elapsed.TotalSeconds:F1} s");
        Assert.Equal(0, r.ExitCode);
    }
}
