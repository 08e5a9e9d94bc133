using System.Globalization;

namespace Vhost.Interop.Tests.Peers;

/// <summary>
/// qemu-storage-daemon (Debian package qemu-system-common) exporting a raw image as a vhost-user-blk
/// server socket: QEMU's own reference vhost-user-blk back-end.
/// </summary>
public sealed class QemuStorageDaemon : PeerProcess
{
    private QemuStorageDaemon(string image, string socket, int queues, bool writable, PeerTempDir dir, TimeSpan lifetime)
        : base("qemu-storage-daemon",
            ["--blockdev", $"driver=file,node-name=f,filename={image}",
             "--export", string.Create(CultureInfo.InvariantCulture,
                 $"type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path={socket},writable={(writable ? "on" : "off")},num-queues={queues}")],
            dir.File("qsd-" + Guid.NewGuid().ToString("N")[..6] + ".log"), lifetime)
    {
        ImagePath = image;
        SocketPath = socket;
    }

    public string ImagePath { get; }

    public string SocketPath { get; }

    /// <summary>Creates a sparse raw image of <paramref name="sizeBytes"/> in <paramref name="dir"/>.</summary>
    public static string CreateImage(PeerTempDir dir, long sizeBytes, string name = "disk.img")
    {
        var path = dir.File(name);
        using var f = new FileStream(path, FileMode.Create, FileAccess.Write);
        f.SetLength(sizeBytes);
        return path;
    }

    /// <summary>Starts the daemon and waits (up to 20 s) for its socket.</summary>
    public static QemuStorageDaemon Start(string image, string socket, PeerTempDir dir, int queues = 2, bool writable = true,
        TimeSpan? lifetime = null)
    {
        var d = new QemuStorageDaemon(image, socket, queues, writable, dir, lifetime ?? TimeSpan.FromSeconds(300));
        var end = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (!File.Exists(socket))
        {
            if (d.HasExited || DateTime.UtcNow > end)
            {
                var tail = d.Tail();
                d.Dispose();
                throw new InvalidOperationException($"qemu-storage-daemon made no socket {socket}:\n{tail}");
            }
            Thread.Sleep(50);
        }
        return d;
    }
}
