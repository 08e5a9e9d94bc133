using System.CommandLine;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Vhost.Blk;
using Vhost.Transport;

namespace Vhost.Cli;

/// <summary>`vhost blk`: serves a virtio-blk disk (RAM by default, or a file/block device) on a vhost-user socket.</summary>
internal static class BlkCommand
{
    public static Command Create()
    {
        var socket = new Option<string>("--socket") { Description = "vhost-user socket path", Required = true };
        var image = new Option<string?>("--image") { Description = "file or block device to serve (default: an in-memory disk)" };
        var size = new Option<long>("--size") { Description = "in-memory disk size in bytes", DefaultValueFactory = _ => 64L << 20 };
        var ro = new Option<bool>("--readonly") { Description = "refuse guest writes (VIRTIO_BLK_F_RO)" };
        var queues = new Option<int>("--queues") { Description = "request queues", DefaultValueFactory = _ => 1 };
        var client = new Option<bool>("--client") { Description = "connect to the front-end instead of listening" };
        var period = new Option<double>("--stats-period") { Description = "seconds between rate lines (0: none)", DefaultValueFactory = _ => 1 };
        var verbose = new Option<bool>("--verbose") { Description = "log protocol events" };
        var cmd = new Command("blk", "virtio-blk back-end") { socket, image, size, ro, queues, client, period, verbose };
        cmd.SetAction(r =>
        {
            using var lf = LoggerFactory.Create(b => b.AddSimpleConsole(o => o.SingleLine = true)
                .SetMinimumLevel(r.GetValue(verbose) ? LogLevel.Debug : LogLevel.Warning));
            bool readOnly = r.GetValue(ro);
            var path = r.GetValue(image);
            IBlockStorage storage = path != null ? new FileStorage(path, readOnly) : new MemoryStorage(r.GetValue(size), readOnly);
            int nq = Math.Clamp(r.GetValue(queues), 1, 64);
            using var dev = new BlkDevice(storage, nq, lf.CreateLogger("blk"));
            using var sock = new VhostUserSocket(dev.Options(r.GetValue(socket)!, r.GetValue(client), lf));
            using var stop = new CancellationTokenSource();
            using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
            sock.Start();
            Console.Out.WriteLine($"vhost blk: {(path ?? "memory")} {storage.CapacityBytes} bytes{(readOnly ? " read-only" : "")}, {nq} queue(s), socket {r.GetValue(socket)}");
            Console.Out.Flush();
            double p = r.GetValue(period);
            var sw = Stopwatch.StartNew();
            long lastReq = 0, lastBytes = 0;
            double lastT = 0;
            while (!stop.Token.WaitHandle.WaitOne(p > 0 ? TimeSpan.FromSeconds(p) : Timeout.InfiniteTimeSpan))
            {
                long req = Interlocked.Read(ref dev.Stats.Requests);
                long bytes = Interlocked.Read(ref dev.Stats.BytesRead) + Interlocked.Read(ref dev.Stats.BytesWritten);
                double t = sw.Elapsed.TotalSeconds, dt = Math.Max(t - lastT, 1e-6);
                Console.Out.WriteLine($"iops {(req - lastReq) / dt:F0} bw {(bytes - lastBytes) / dt / 1e6:F1} MB/s");
                Console.Out.Flush();
                (lastReq, lastBytes, lastT) = (req, bytes, t);
            }
            Console.Out.WriteLine($"totals: requests {dev.Stats.Requests} read {dev.Stats.BytesRead} B written {dev.Stats.BytesWritten} B errors {dev.Stats.Errors} in {sw.Elapsed.TotalSeconds:F1} s");
            return 0;
        });
        return cmd;
    }
}
