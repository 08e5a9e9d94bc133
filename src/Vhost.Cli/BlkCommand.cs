using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Vhost.Blk;
using Vhost.Transport;

namespace Vhost.Cli;

/// <summary>`vhost blk`: a virtio-blk back-end over an image file, a block device or memory.</summary>
internal static class BlkCommand
{
    private const long DefaultSize = 64L << 20;

    public static Command Create()
    {
        var socket = new Option<string[]>("--socket")
        {
            Description = "vhost-user socket path (repeat for more devices: they share --image, e.g. the two ends of a live migration, or each get an in-memory disk)",
            Required = true,
            AllowMultipleArgumentsPerToken = false,
        };
        var threads = new Option<int>("--threads") { Description = "event threads serving the devices' sockets and queues", DefaultValueFactory = _ => 1 };
        var image = new Option<string?>("--image") { Description = "raw image file or block device (created with --size if missing)" };
        var size = new Option<string?>("--size") { Description = "disk size in bytes (K/M/G suffixes); in-memory disk when no --image" };
        var readOnly = new Option<bool>("--readonly") { Description = "refuse writes (VIRTIO_BLK_F_RO)" };
        // QEMU's vhost-user-blk-pci asks for one queue per vCPU and refuses a back-end that offers fewer
        var queues = new Option<int>("--queues") { Description = "request queues a front-end may use at most (QEMU asks for one per vCPU)", DefaultValueFactory = _ => 64 };
        var client = new Option<bool>("--client") { Description = "connect to the front-end instead of listening" };
        var ioThreads = new Option<int>("--io-threads") { Description = "threads for file I/O (0: on the queue threads)", DefaultValueFactory = _ => 2 };
        var writethrough = new Option<bool>("--writethrough") { Description = "start in write-through cache mode" };
        var latency = new Option<double>("--latency-ms") { Description = "make every write request take this long, up to twice by sector (a disk slow to write, for tests)", Hidden = true };
        var period = new Option<double>("--stats-period") { Description = "seconds between rate lines (0: none)", DefaultValueFactory = _ => 1 };
        var verbose = new Option<bool>("--verbose") { Description = "log protocol events" };
        var iommu = new Option<bool>("--iommu")
        {
            Description = "offer VIRTIO_F_ACCESS_PLATFORM: serve guests behind a vIOMMU (descriptors hold IOVAs, translated through IOTLB messages); "
                + "a front-end that does not negotiate it is served as before, so it is on unless --iommu false",
            DefaultValueFactory = _ => true,
        };
        var cmd = new Command("blk", "virtio-blk back-end: serves a disk image, block device or RAM disk over vhost-user")
        {
            socket, image, size, readOnly, queues, client, ioThreads, writethrough, latency, period, verbose, threads, iommu,
        };
        cmd.SetAction(r =>
        {
            long? bytes = null;
            if (r.GetValue(size) is { } text)
            {
                if (!TryParseSize(text, out long b) || b <= 0 || b % 512 != 0)
                {
                    Console.Error.WriteLine($"--size {text}: need a positive multiple of 512 bytes (K/M/G suffixes allowed)");
                    return 2;
                }
                bytes = b;
            }
            if (r.GetValue(queues) is < 1 or > 64)
            {
                Console.Error.WriteLine("--queues must be 1..64");
                return 2;
            }
            var paths = r.GetValue(socket)!;
            if (r.GetValue(threads) < 1)
            {
                Console.Error.WriteLine("--threads must be at least 1");
                return 2;
            }
            using var lf = LoggerFactory.Create(b => b.AddSimpleConsole(o => o.SingleLine = true)
                .SetMinimumLevel(r.GetValue(verbose) ? LogLevel.Debug : LogLevel.Information));
            var storages = new List<IBlockStorage>();
            try
            {
                // one image serves every socket (the two ends of a live migration on one host); without one, each
                // socket gets its own memory disk
                IBlockStorage? shared = r.GetValue(image) is { } path
                    ? new FileDisk(path, r.GetValue(readOnly), File.Exists(path) ? null : bytes ?? DefaultSize)
                    : null;
                foreach (var _ in paths) storages.Add(shared ?? new MemoryDisk(bytes ?? DefaultSize));
            }
            catch (IOException e)
            {
                Console.Error.WriteLine(e.Message);
                foreach (var st in storages.Distinct()) st.Dispose();
                return 1;
            }
            using var runtime = new Runtime.VhostRuntime(new Runtime.VhostRuntimeOptions { EventThreads = r.GetValue(threads), LoggerFactory = lf });
            using var pool = storages[0].IsSlow || r.GetValue(latency) > 0 ? new BlkIoPool(Math.Max(1, r.GetValue(ioThreads))) : null;
            try
            {
                return Serve(storages, paths, new VirtioBlkOptions
                {
                    Queues = r.GetValue(queues),
                    ReadOnly = r.GetValue(readOnly),
                    IoThreads = r.GetValue(ioThreads),
                    IoPool = r.GetValue(ioThreads) > 0 ? pool : null,
                    Writeback = !r.GetValue(writethrough),
                    SimulatedLatency = TimeSpan.FromMilliseconds(Math.Max(0, r.GetValue(latency))),
                    LoggerFactory = lf,
                }, r.GetValue(client), r.GetValue(period), runtime, r.GetValue(iommu));
            }
            finally
            {
                foreach (var st in storages.Distinct()) st.Dispose();
            }
        });
        return cmd;
    }

    private sealed class Served(VirtioBlk blk, VhostUserSocket socket)
    {
        public VirtioBlk Blk { get; } = blk;
        public VhostUserSocket Socket { get; } = socket;
    }

    private static int Serve(List<IBlockStorage> storages, string[] paths, VirtioBlkOptions options, bool client, double period, Runtime.VhostRuntime runtime, bool iommu)
    {
        using var stop = new CancellationTokenSource();
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
        var served = new List<Served>();
        for (int i = 0; i < paths.Length; i++)
        {
            var blk = new VirtioBlk(storages[i], options);
            var socketOptions = blk.CreateSocketOptions(paths[i], client, runtime: runtime);
            socketOptions.Iommu = iommu;
            var socket = new VhostUserSocket(socketOptions);
            socket.Start();
            served.Add(new Served(blk, socket));
        }
        var storage = storages[0];
        string where = paths.Length == 1 ? paths[0] : $"{paths.Length} sockets ({paths[0]} ...)";
        Console.Out.WriteLine($"vhost blk: {where} ({(client ? "client" : "server")}), {storage.Capacity} bytes{(served[0].Blk.IsReadOnly ? " read-only" : "")}, up to {options.Queues} queue(s), {(storage is MemoryDisk ? "memory" : "file")}");
        Console.Out.WriteLine(client ? $"vhost blk: connecting to {string.Join(", ", paths)}" : $"vhost blk: waiting for a front-end on {string.Join(", ", paths)}");
        Console.Out.Flush();
        BlkQueueStats Total()
        {
            var t = new BlkQueueStats();
            foreach (var s in served) t.Add(s.Blk.TotalStats());
            return t;
        }
        var sw = Stopwatch.StartNew();
        var last = Total();
        double lastT = 0;
        while (!stop.Token.WaitHandle.WaitOne(period > 0 ? TimeSpan.FromSeconds(period) : Timeout.InfiniteTimeSpan))
        {
            double now = sw.Elapsed.TotalSeconds, dt = now - lastT;
            lastT = now;
            var s = Total();
            long reqs = s.Requests - last.Requests;
            int inFlight = served.Sum(x => x.Blk.InFlight);
            if (reqs > 0 || inFlight > 0)
            {
                Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{reqs / dt,10:N0} IOPS   read {(s.ReadBytes - last.ReadBytes) / dt / 1e6,9:N1} MB/s   write {(s.WrittenBytes - last.WrittenBytes) / dt / 1e6,9:N1} MB/s   errors {s.IoErrors + s.Invalid}   in flight {inFlight}"));
                Console.Out.Flush();
            }
            last = s;
        }
        foreach (var x in served) x.Socket.Dispose();
        foreach (var x in served) x.Blk.Dispose();
        var t = Total();
        double secs = sw.Elapsed.TotalSeconds;
        Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"totals over {secs:F1} s: {t.Requests} requests ({t.Reads} reads {t.ReadBytes} bytes, {t.Writes} writes {t.WrittenBytes} bytes, {t.Flushes} flushes, {t.Discards} discards, {t.WriteZeroes} write-zeroes, {t.GetIds} get-id), {t.IoErrors} I/O errors, {t.Invalid} refused, {t.Unsupported} unsupported"));
        if (t.IotlbHits + t.IotlbMisses + t.IotlbUpdates > 0)
            Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"iotlb: {t.IotlbHits} hits, {t.IotlbMisses} misses, {t.IotlbUpdates} updates, {t.IotlbInvalidations} invalidations"));
        return 0;
    }

    internal static bool TryParseSize(string text, out long bytes)
    {
        bytes = 0;
        text = text.Trim();
        if (text.Length == 0) return false;
        long mult = char.ToUpperInvariant(text[^1]) switch { 'K' => 1L << 10, 'M' => 1L << 20, 'G' => 1L << 30, 'T' => 1L << 40, _ => 1 };
        if (mult != 1) text = text[..^1];
        if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long v) || v > long.MaxValue / mult) return false;
        bytes = v * mult;
        return true;
    }
}
