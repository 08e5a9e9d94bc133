using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using Vhost.Protocol;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;

// Scale and leak figures for a `vhost` back-end process, driven by the C# test front-end:
//   scale net|blk COUNT TOOL [TOOL ARGS...]   starts TOOL on COUNT sockets, connects a device to each, moves traffic on
//                                             every one, and prints the process's threads, RSS, fds and mappings
//   cycles net|blk COUNT TOOL [TOOL ARGS...]  COUNT connect/set-up/traffic/disconnect cycles on one socket, figures before and after
//   neighbours net|blk TOOL [TOOL ARGS...]    a stalling, a flooding and a dying front-end beside a good device: its latency
//   rate SOCKET SECONDS [--iommu]             a net back-end already listening on SOCKET (ours, or DPDK's net_vhost) dequeues
//                                             64-byte frames from an in-order split ring; prints the frames per second it
//                                             took, per second and the median. --iommu negotiates VIRTIO_F_ACCESS_PLATFORM
//                                             and maps all guest memory with one IOTLB update, as QEMU does with iommu=pt
//   crypto-rate SECONDS [SIZE]                an in-process virtio-crypto device (its event thread) encrypts SIZE-byte
//                                             (default 4096) AES-128-CBC requests, 32 in flight, fed by the test driver
//                                             on another thread; prints requests and MB/s per second and the median,
//                                             and MB per CPU second of the event threads (what openssl speed reports)
// TOOL is the vhost command (e.g. artifacts/vhost/Vhost.Cli); "{sockets}" in its arguments becomes --socket PATH for each socket.

internal static class Scale
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(20);

    public static int Main(string[] args)
    {
        if (args.Length >= 2 && args[0] == "crypto-rate")
            return RunCryptoRate(int.Parse(args[1], CultureInfo.InvariantCulture), args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 4096);
        if (args.Length >= 3 && args[0] == "rate")
            return RunRate(args[1], int.Parse(args[2], CultureInfo.InvariantCulture), args.Contains("--iommu"));
        if (args.Length < 3) return Usage();
        string what = args[0], kind = args[1];
        if (kind is not ("net" or "blk")) return Usage();
        switch (what)
        {
            case "scale": return RunScale(kind, int.Parse(args[2], CultureInfo.InvariantCulture), args[3], args[4..]);
            case "cycles": return RunCycles(kind, int.Parse(args[2], CultureInfo.InvariantCulture), args[3], args[4..]);
            case "neighbours": return RunNeighbours(kind, args[2], args[3..]);
            default: return Usage();
        }
    }

    /// <summary>AES-128-CBC encryption throughput of the crypto back-end's event thread.</summary>
    private static int RunCryptoRate(int seconds, int size)
    {
        const int depth = 32;
        var crypto = new Vhost.Crypto.VirtioCrypto(new Vhost.Crypto.VirtioCryptoOptions());
        using var started = new ManualResetEventSlim();
        crypto.Started += _ => started.Set();
        using var socket = new Vhost.Transport.VhostUserSocket(crypto.CreateSocketOptions(TestFrontEndListener.TempPath()));
        socket.Start();
        using var fe = TestFrontEnd.Connect(socket.Path, T);
        fe.DefaultTimeout = T;
        using var setup = DeviceSetup.Run(fe, new DeviceSetupOptions
        {
            QueueCount = 1,
            // five descriptors per request, 32 in flight
            QueueSize = 256,
            MemorySize = 8 << 20,
            ProtocolFeatures = DeviceSetupOptions.DefaultProtocolFeatures | DeviceSetupOptions.ProtocolBits(ProtocolFeature.CryptoSession),
            Features = ~(VirtioFeature.Bit(VirtioFeature.LogAll) | VirtioFeature.Bit(VirtioFeature.AccessPlatform) | VirtioFeature.Bit(VirtioFeature.RingPacked)),
        });
        if (!started.Wait(T)) throw new TimeoutException("the crypto device never started");
        // CREATE_CRYPTO_SESSION in QEMU 7.1's layout: id, then cipher alg, key length, ..., op type, direction; the key at 56
        var session = new byte[632];
        BinaryPrimitives.WriteInt64LittleEndian(session, -1);
        BinaryPrimitives.WriteUInt32LittleEndian(session.AsSpan(8), (uint)Vhost.Crypto.CipherAlgorithm.AesCbc);
        BinaryPrimitives.WriteUInt32LittleEndian(session.AsSpan(12), 16);
        session[32] = (byte)Vhost.Crypto.SymOpType.Cipher;
        session[33] = 1;
        Random.Shared.NextBytes(session.AsSpan(56, 16));
        fe.Send(VhostUserRequest.CreateCryptoSession, session);
        long id = BinaryPrimitives.ReadInt64LittleEndian(fe.ExpectReply(VhostUserRequest.CreateCryptoSession, session.Length, T).Payload);
        if (id < 0) throw new InvalidOperationException($"session refused ({id})");
        var ring = DriverRing.Create(setup[0], setup.Memory);
        var mem = setup.Memory;
        var chains = new DriverBuffer[depth][];
        var slotOf = new Dictionary<ushort, int>();
        for (int i = 0; i < depth; i++)
        {
            ulong hdr = mem.Allocate(72, 64), iv = mem.Allocate(16, 64), src = mem.Allocate((ulong)size, 64), dst = mem.Allocate((ulong)size, 64), st = mem.Allocate(1, 64);
            var h = mem.Span(hdr, 72);
            h.Clear();
            BinaryPrimitives.WriteUInt32LittleEndian(h, Vhost.Crypto.VirtioCryptoSpec.CipherEncrypt);
            BinaryPrimitives.WriteInt64LittleEndian(h[8..], id);
            BinaryPrimitives.WriteUInt32LittleEndian(h[24..], 16);
            BinaryPrimitives.WriteUInt32LittleEndian(h[28..], (uint)size);
            BinaryPrimitives.WriteUInt32LittleEndian(h[32..], (uint)size);
            BinaryPrimitives.WriteUInt32LittleEndian(h[64..], (uint)Vhost.Crypto.SymOpType.Cipher);
            Random.Shared.NextBytes(mem.Span(src, size));
            chains[i] = [new(hdr, 72, false), new(iv, 16, false), new(src, (uint)size, false), new(dst, (uint)size, true), new(st, 1, true)];
            slotOf[ring.Add(chains[i])] = i;
        }
        setup[0].Kick();
        var perSecond = new List<double>();
        var clock = Stopwatch.StartNew();
        long done = 0, mark = 0, doneAtWarm = 0;
        double markAt = 0, cpuAtWarm = 0, wallAtWarm = 0;
        while (perSecond.Count < seconds + 1)
        {
            bool added = false;
            while (ring.TryGetUsed(out var u))
            {
                done++;
                int slot = slotOf[u.Id];
                slotOf.Remove(u.Id);
                slotOf[ring.Add(chains[slot])] = slot;
                added = true;
            }
            if (added) setup[0].Kick();
            else Thread.SpinWait(16);
            double now = clock.Elapsed.TotalSeconds;
            if (now - markAt >= 1)
            {
                perSecond.Add((done - mark) / (now - markAt));
                mark = done;
                markAt = now;
                // the first second warms up: CPU time counts from its end, like the samples
                if (perSecond.Count == 1) (doneAtWarm, cpuAtWarm, wallAtWarm) = (done, EventThreadCpuSeconds(), now);
            }
        }
        double cpu = EventThreadCpuSeconds() - cpuAtWarm, wall = clock.Elapsed.TotalSeconds - wallAtWarm;
        double perCpu = (done - doneAtWarm) * (double)size / cpu / 1e6;
        var samples = perSecond.Skip(1).Order().ToArray();
        double median = samples[samples.Length / 2];
        foreach (var v in perSecond) Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{v:F0} requests/s {v * size / 1e6:F1} MB/s"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"crypto-rate aes-128-cbc size={size} seconds={samples.Length} median_requests={median:F0} median_MBps={median * size / 1e6:F1} min_MBps={samples[0] * size / 1e6:F1} max_MBps={samples[^1] * size / 1e6:F1}" +
            $" event_cpu_share={cpu / wall:F2} MBps_per_event_cpu_second={perCpu:F1}"));
        return 0;
    }

    /// <summary>
    /// User and system CPU seconds of the runtime's event threads (/proc, clock ticks of 10 ms): MB per CPU second of
    /// the serving thread is the throughput per core on a shared machine, as openssl speed divides by its user time.
    /// </summary>
    private static double EventThreadCpuSeconds()
    {
        double ticks = 0;
        foreach (var task in Directory.GetDirectories("/proc/self/task"))
        {
            try
            {
                if (!File.ReadAllText(Path.Combine(task, "comm")).StartsWith("vhost-event", StringComparison.Ordinal)) continue;
                var stat = File.ReadAllText(Path.Combine(task, "stat"));
                // fields after the parenthesised name: state is field 3, utime 14, stime 15
                var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                ticks += double.Parse(f[11], CultureInfo.InvariantCulture) + double.Parse(f[12], CultureInfo.InvariantCulture);
            }
            catch (IOException)
            {
                // a thread that ended meanwhile
            }
        }
        return ticks / 100;
    }

    /// <summary>Frames per second a net back-end takes from the transmit queue, with or without a vIOMMU in the way.</summary>
    private static int RunRate(string socket, int seconds, bool iommu)
    {
        const ushort size = 256;
        using var fe = TestFrontEnd.Connect(socket, T);
        fe.DefaultTimeout = T;
        ulong access = VirtioFeature.Bit(VirtioFeature.AccessPlatform);
        var options = new DeviceSetupOptions
        {
            QueueCount = 2,
            QueueSize = size,
            MemorySize = 32 << 20,
            // no event index: the back-ends poll and the driver never kicks after the first
            Features = (new DeviceSetupOptions().Features & ~VirtioFeature.Bit(VirtioFeature.RingEventIdx) & ~access) | (iommu ? access : 0),
            ProtocolFeatures = DeviceSetupOptions.DefaultProtocolFeatures | (iommu ? DeviceSetupOptions.ProtocolBits(ProtocolFeature.BackendReq) : 0),
            // DPDK starts a device that negotiated STATUS only at DRIVER_OK
            SendStatus = true,
            // under a vIOMMU the ring addresses are IOVAs too: the identity map makes them the GPAs
            RingAddress = iommu ? gpa => gpa : null,
        };
        using var setup = new DeviceSetup(fe, options);
        setup.Negotiate();
        if (iommu && !VirtioFeature.Has(setup.AckedFeatures, VirtioFeature.AccessPlatform))
            throw new NotSupportedException($"the back-end does not offer VIRTIO_F_ACCESS_PLATFORM (0x{setup.OfferedFeatures:x})");
        using var channel = iommu ? fe.OpenBackendChannel(needReply: true) : null;
        setup.SendMemTable();
        setup.SetUpQueue(0);
        setup.SetUpQueue(1);
        // after the rings: DPDK 22.11 keeps its IOTLB per virtqueue and drops an update sent before the queues exist
        if (iommu)
        {
            foreach (var r in setup.Memory.Regions)
            {
                ulong nack = fe.SendIotlb(new IotlbPayload(r.Info.GuestPhysAddr, r.Info.Size, r.Info.UserAddr, IotlbPayload.PermReadWrite, IotlbPayload.TypeUpdate));
                if (nack != 0) throw new InvalidOperationException($"IOTLB update refused ({nack})");
            }
        }
        setup.EnableQueues();
        var tx = new InOrderDriver(setup[1], setup.Memory, packed: false, writable: false, length: 12 + 64);
        // read before offering: a polling back-end can use the whole ring before the next line runs
        ushort lastUsed = tx.UsedIndex;
        tx.Offer(size);
        setup[1].Kick();
        var perSecond = new List<double>();
        var clock = Stopwatch.StartNew();
        long taken = 0, mark = 0, idle = 0;
        double markAt = 0;
        while (perSecond.Count < seconds + 1)
        {
            ushort used = tx.UsedIndex;
            int done = (ushort)(used - lastUsed);
            if (done > 0)
            {
                lastUsed = used;
                taken += done;
                // in order: what was used is free again; keep the ring full
                tx.Offer(done);
            }
            else
            {
                Thread.SpinWait(8);
                // a back-end that waits for kicks (or missed the first) gets one now and then while nothing moves
                if ((++idle & 0xffff) == 0) setup[1].Kick();
            }
            double now = clock.Elapsed.TotalSeconds;
            if (now - markAt >= 1)
            {
                perSecond.Add((taken - mark) / (now - markAt));
                mark = taken;
                markAt = now;
            }
        }
        // the first second includes the back-end's start
        var samples = perSecond.Skip(1).Order().ToArray();
        foreach (var v in perSecond) Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{v / 1e6:F3} Mpps"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"rate iommu={iommu} frames={taken} seconds={samples.Length} median_mpps={samples[samples.Length / 2] / 1e6:F3} min={samples[0] / 1e6:F3} max={samples[^1] / 1e6:F3}"));
        return 0;
    }

    private static int Usage()
    {
        Console.Error.WriteLine("usage: scale|cycles net|blk COUNT TOOL [ARGS...] | neighbours net|blk TOOL [ARGS...]");
        return 2;
    }

    private sealed record Figures(int Threads, long RssKiB, int Fds, int Maps)
    {
        public int PoolThreads { get; init; }

        public static Figures Of(Process p)
        {
            int threads = 0;
            long rss = 0;
            foreach (var line in File.ReadLines($"/proc/{p.Id}/status"))
            {
                if (line.StartsWith("Threads:", StringComparison.Ordinal)) threads = int.Parse(line[8..].Trim(), CultureInfo.InvariantCulture);
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = long.Parse(line[6..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
            }
            // the .NET thread pool's workers come and go with its timers: counted apart from the threads the back-end made
            int pool = Directory.GetDirectories($"/proc/{p.Id}/task").Count(t =>
            {
                try { return File.ReadAllText(Path.Combine(t, "comm")).StartsWith(".NET TP Worker", StringComparison.Ordinal); }
                catch (IOException) { return false; }
            });
            return new Figures(threads - pool, rss, Directory.GetFiles($"/proc/{p.Id}/fd").Length, File.ReadLines($"/proc/{p.Id}/maps").Count()) { PoolThreads = pool };
        }

        public override string ToString() => $"threads={Threads}(+{PoolThreads} pool) rss_mib={RssKiB / 1024.0:F1} fds={Fds} maps={Maps}";
    }

    private static (Process Process, string[] Paths) Start(string kind, int count, string tool, string[] toolArgs)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"vhost-scale-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        var paths = Enumerable.Range(0, count).Select(i => Path.Combine(dir, $"{kind}{i}.sock")).ToArray();
        var psi = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(kind);
        foreach (var a in toolArgs)
        {
            if (a == "{sockets}")
            {
                foreach (var p in paths)
                {
                    psi.ArgumentList.Add("--socket");
                    psi.ArgumentList.Add(p);
                }
            }
            else
            {
                psi.ArgumentList.Add(a);
            }
        }
        var proc = Process.Start(psi)!;
        proc.OutputDataReceived += (_, _) => { };
        proc.ErrorDataReceived += (_, e) => { if (e.Data != null) Console.Error.WriteLine($"[{kind}] {e.Data}"); };
        proc.BeginOutputReadLine();
        proc.BeginErrorReadLine();
        var sw = Stopwatch.StartNew();
        while (!paths.All(File.Exists))
        {
            if (sw.Elapsed > T || proc.HasExited) throw new TimeoutException("the back-end did not listen on every socket");
            Thread.Sleep(20);
        }
        return (proc, paths);
    }

    /// <summary>One front-end device and its traffic: net frames on the transmit queue, or blk writes and reads.</summary>
    private sealed class Guest : IDisposable
    {
        private readonly string _kind;
        public readonly TestFrontEnd Fe;
        public readonly DeviceSetup Setup;
        private readonly DriverRing _ring;
        private readonly ulong[] _buffers;
        private readonly ulong _status;
        private readonly Queue<(ushort Id, int Buffer)> _pending = new();
        private readonly Stack<int> _free = new();
        public long Completed;

        public Guest(string kind, string path)
        {
            _kind = kind;
            Fe = TestFrontEnd.Connect(path, T);
            Fe.DefaultTimeout = T;
            Setup = DeviceSetup.Run(Fe, new DeviceSetupOptions
            {
                QueueCount = kind == "net" ? 2 : 1,
                QueueSize = 64,
                MemorySize = 2 << 20,
                ProtocolFeatures = DeviceSetupOptions.DefaultProtocolFeatures,
            });
            _ring = DriverRing.Create(Setup[kind == "net" ? 1 : 0], Setup.Memory);
            _buffers = new ulong[16];
            for (int i = 0; i < _buffers.Length; i++)
            {
                _buffers[i] = Setup.Memory.Allocate(kind == "net" ? 12u + 64 : 16u + 4096, 64);
                _free.Push(i);
                if (kind == "net")
                {
                    var b = Setup.Memory.Span(_buffers[i], 12 + 64);
                    b.Clear();
                    b.Slice(12, 6).Fill(0xff); // broadcast
                    b[12 + 6] = 0x02;
                    b[12 + 12] = 0x08;
                }
            }
            _status = Setup.Memory.Allocate(16 * 16, 64);
        }

        /// <summary>Posts what fits, collects what completed; returns how many completed.</summary>
        public int Pump()
        {
            int done = 0;
            while (_pending.Count > 0 && _ring.TryGetUsed(out var u))
            {
                var (id, buf) = _pending.Dequeue();
                if (u.Id != id) throw new InvalidDataException($"used id {u.Id}, expected {id}");
                _free.Push(buf);
                done++;
            }
            bool added = false;
            while (_free.Count > 0)
            {
                int i = _free.Pop();
                ushort id = _kind == "net"
                    ? _ring.Add(new DriverBuffer(_buffers[i], 12 + 64, false))
                    : AddBlk(i);
                _pending.Enqueue((id, i));
                added = true;
            }
            if (added) Setup[_kind == "net" ? 1 : 0].Kick();
            Completed += done;
            return done;
        }

        private ushort AddBlk(int i)
        {
            var h = Setup.Memory.Span(_buffers[i], 16);
            BinaryPrimitives.WriteUInt32LittleEndian(h, (uint)(i % 2 == 0 ? 1 : 0)); // writes and reads
            BinaryPrimitives.WriteUInt64LittleEndian(h[8..], (ulong)i * 8);
            return _ring.Add(new DriverBuffer(_buffers[i], 16, false), new DriverBuffer(_buffers[i] + 16, 4096, i % 2 != 0),
                new DriverBuffer(_status + (ulong)(16 * i), 1, true));
        }

        public void Dispose()
        {
            Setup.Dispose();
            Fe.Dispose();
        }
    }

    private static void Settle() => Thread.Sleep(1000); // the back-end's threads and heap settle before a reading

    private static int RunScale(string kind, int count, string tool, string[] toolArgs)
    {
        var (proc, paths) = Start(kind, count, tool, toolArgs);
        try
        {
            Settle();
            var listening = Figures.Of(proc);
            Console.WriteLine($"{kind} {count} sockets, nothing connected: {listening}");
            var guests = new List<Guest>();
            foreach (var p in paths) guests.Add(new Guest(kind, p));
            Settle();
            var idle = Figures.Of(proc);
            Console.WriteLine($"{kind} {count} devices connected, idle: {idle} (per device: {(idle.RssKiB - listening.RssKiB) / 1024.0 / count:F2} MiB)");
            var sw = Stopwatch.StartNew();
            while (sw.Elapsed < TimeSpan.FromSeconds(5))
            {
                foreach (var g in guests) g.Pump();
            }
            var busy = Figures.Of(proc);
            long min = guests.Min(g => g.Completed), total = guests.Sum(g => g.Completed);
            int moving = guests.Count(g => g.Completed > 0);
            Console.WriteLine($"{kind} {count} devices with traffic for 5 s: {busy}; {moving} of {count} moved traffic, " +
                $"{total} {(kind == "net" ? "frames" : "requests")} in all, the least busy device {min}");
            foreach (var g in guests) g.Dispose();
            return moving == count ? 0 : 1;
        }
        finally
        {
            Stop(proc);
        }
    }

    private static int RunCycles(string kind, int count, string tool, string[] toolArgs)
    {
        var (proc, paths) = Start(kind, 1, tool, toolArgs);
        try
        {
            Figures? start = null;
            int warm = Math.Min(20, count / 10);
            for (int i = 0; i < count + warm; i++)
            {
                if (i == warm)
                {
                    Settle();
                    start = Figures.Of(proc);
                    Console.WriteLine($"{kind} after {warm} warm-up cycles: {start}");
                }
                using var g = new Guest(kind, paths[0]);
                var sw = Stopwatch.StartNew();
                while (g.Completed < 8)
                {
                    g.Pump();
                    if (sw.Elapsed > T) throw new TimeoutException($"cycle {i}: the device moved no traffic");
                }
            }
            Settle();
            var end = Figures.Of(proc);
            Console.WriteLine($"{kind} after {count} more cycles: {end}");
            // the runtime's heap and pool threads (a stack and its guard each) add or drop a few mappings; a leak would add one or more per cycle
            bool ok = end.Fds == start!.Fds && Math.Abs(end.Maps - start.Maps) <= 16 && end.Threads == start.Threads && end.RssKiB - start.RssKiB < 10 * 1024;
            Console.WriteLine($"{kind} cycles: fds {end.Fds - start.Fds:+0;-0;0}, maps {end.Maps - start.Maps:+0;-0;0}, threads {end.Threads - start.Threads:+0;-0;0}, " +
                $"rss {(end.RssKiB - start.RssKiB) / 1024.0:+0.0;-0.0;0} MiB: {(ok ? "no leak" : "LEAK")}");
            return ok ? 0 : 1;
        }
        finally
        {
            Stop(proc);
        }
    }

    private static int RunNeighbours(string kind, string tool, string[] toolArgs)
    {
        var (proc, paths) = Start(kind, 4, tool, toolArgs);
        try
        {
            using var good = new Guest(kind, paths[0]);
            double Latency(string phase)
            {
                var samples = new List<double>();
                var sw = Stopwatch.StartNew();
                while (sw.Elapsed < TimeSpan.FromSeconds(3))
                {
                    var t = Stopwatch.GetTimestamp();
                    long before = good.Completed;
                    while (good.Completed == before) good.Pump();
                    samples.Add(Stopwatch.GetElapsedTime(t).TotalMicroseconds);
                }
                samples.Sort();
                double p99 = samples[(int)(samples.Count * 0.99)];
                Console.WriteLine($"{kind} good device, {phase}: {samples.Count} rounds, p50 {samples[samples.Count / 2]:F0} us, p99 {p99:F0} us");
                return p99;
            }
            double alone = Latency("alone");
            // a stall: half a message header, then nothing
            using var stall = TestFrontEnd.Connect(paths[1], T);
            stall.SendRaw([1, 0, 0, 0, 1, 0]);
            // a flood: GET_FEATURES as fast as the socket takes them, replies never read
            using var flood = TestFrontEnd.Connect(paths[2], T);
            using var stopFlood = new CancellationTokenSource();
            var flooder = new Thread(() =>
            {
                var msg = VhostUserMessage.Encode(VhostUserRequest.GetFeatures, default, false);
                try
                {
                    while (!stopFlood.IsCancellationRequested) flood.SendRaw(msg);
                }
                catch (IOException)
                {
                }
            }) { IsBackground = true };
            flooder.Start();
            // a death: a device set up with traffic in flight, then its front-end gone
            var dying = new Guest(kind, paths[3]);
            dying.Pump();
            dying.Fe.Dispose();
            double beside = Latency("beside a stalled, a flooding and a dead front-end");
            stopFlood.Cancel();
            flood.Shutdown();
            Console.WriteLine($"{kind} neighbours: p99 {alone:F0} us alone, {beside:F0} us beside them");
            return 0;
        }
        finally
        {
            Stop(proc);
        }
    }

    private static void Stop(Process proc)
    {
        if (!proc.HasExited)
        {
            Process.Start("kill", ["-INT", proc.Id.ToString(CultureInfo.InvariantCulture)])!.WaitForExit();
            if (!proc.WaitForExit(10000)) proc.Kill();
        }
        proc.Dispose();
    }
}
