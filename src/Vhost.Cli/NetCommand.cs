using System.CommandLine;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Vhost.Device;
using Vhost.Net;
using Vhost.Protocol;
using Vhost.Rings;
using Vhost.Runtime;
using Vhost.Transport;

namespace Vhost.Cli;

/// <summary>`vhost net`: a virtio-net back-end that forwards between its sockets like testpmd's modes.</summary>
internal static class NetCommand
{
    public static Command Create()
    {
        var sockets = new Option<string[]>("--socket") { Description = "vhost-user socket path (repeat for more ports)", Required = true, AllowMultipleArgumentsPerToken = false };
        var fwd = new Option<string>("--fwd") { Description = "io | macswap | rxonly | txonly | switch | responder", DefaultValueFactory = _ => "responder" };
        var queues = new Option<int>("--queues") { Description = "queue pairs per port", DefaultValueFactory = _ => 1 };
        var txpkts = new Option<int>("--txpkts") { Description = "frame size for txonly", DefaultValueFactory = _ => 64 };
        var client = new Option<bool>("--client") { Description = "connect to the front-end instead of listening" };
        var period = new Option<double>("--stats-period") { Description = "seconds between rate lines (0: none)", DefaultValueFactory = _ => 1 };
        var json = new Option<bool>("--json") { Description = "print rates and totals as JSON lines" };
        var verbose = new Option<bool>("--verbose") { Description = "log protocol events" };
        var count = new Option<long>("--count") { Description = "txonly: stop sending after this many frames per port (0: never), staying connected" };
        var startDelay = new Option<double>("--start-delay")
        {
            Description = "txonly: seconds to wait after a port's device is ready before sending (a front-end may discard what arrives while it starts)",
            Hidden = true,
        };
        var startOnKick = new Option<bool>("--start-on-kick")
        {
            Description = "txonly: send on a receive queue only after the front-end has kicked it since its device was ready. "
                + "For DPDK's virtio driver, which kicks each receive queue once when it starts the port, after discarding what "
                + "its rings held; a driver that honours the no-kick flag this tool sets may never kick",
            Hidden = true,
        };
        var eviction = new Option<LineEviction>("--line-eviction")
        {
            Description = "flush received frames' cache lines after copying them: Off, Tuned (when measured faster) or Always",
            DefaultValueFactory = _ => LineEviction.Tuned,
        };
        var threads = new Option<int>("--threads")
        {
            Description = "threads that serve the ports' queues (polling threads, or event threads with --event-driven); default: one per queue pair, at most one per CPU",
        };
        var eventDriven = new Option<bool>("--event-driven")
        {
            Description = "wait for the front-end's kicks instead of busy-polling (DPDK's interrupt mode): no CPU while idle",
        };
        var macTable = new Option<int>("--mac-table-size")
        {
            Description = "switch: MAC addresses the switch learns at most (one table for the process); a source MAC beyond it is not learned, only counted",
            DefaultValueFactory = _ => MacTable.DefaultCapacity,
        };
        var iommu = new Option<bool>("--iommu")
        {
            Description = "offer VIRTIO_F_ACCESS_PLATFORM: serve guests behind a vIOMMU (descriptors hold IOVAs, translated through IOTLB messages); "
                + "a front-end that does not negotiate it is served as before, so it is on unless --iommu false",
            DefaultValueFactory = _ => true,
        };
        var cmd = new Command("net", "virtio-net back-end: forwards frames between its vhost-user sockets")
        {
            sockets, fwd, queues, txpkts, client, period, json, verbose, count, startDelay, startOnKick, eviction, threads, eventDriven, macTable, iommu,
        };
        cmd.SetAction(r =>
        {
            var mode = r.GetValue(fwd)!;
            if (!NetForwarder.Modes.Contains(mode))
            {
                Console.Error.WriteLine($"unknown --fwd {mode}; one of {string.Join(", ", NetForwarder.Modes)}");
                return 2;
            }
            VirtioNet.TransmitLineEviction = r.GetValue(eviction);
            using var lf = LoggerFactory.Create(b => b.AddSimpleConsole(o => o.SingleLine = true)
                .SetMinimumLevel(r.GetValue(verbose) ? LogLevel.Debug : LogLevel.Warning));
            if (r.GetValue(threads) < 0)
            {
                Console.Error.WriteLine("--threads must be at least 1");
                return 2;
            }
            if (r.GetValue(macTable) is < 1 or > (1 << 24))
            {
                Console.Error.WriteLine("--mac-table-size must be between 1 and 16777216");
                return 2;
            }
            if (r.GetValue(eventDriven) && mode is "txonly" or "switch")
            {
                Console.Error.WriteLine($"--fwd {mode} polls; it has no event-driven form");
                return 2;
            }
            using var fwdr = new NetForwarder(r.GetValue(sockets)!, mode, r.GetValue(queues), r.GetValue(txpkts), r.GetValue(client), lf, r.GetValue(count),
                TimeSpan.FromSeconds(Math.Max(0, r.GetValue(startDelay))), r.GetValue(startOnKick), r.GetValue(threads), r.GetValue(eventDriven), r.GetValue(macTable),
                r.GetValue(iommu));
            return fwdr.Run(r.GetValue(period), r.GetValue(json));
        });
        return cmd;
    }
}

/// <summary>
/// The ports and the forwarding modes of `vhost net`. Each queue pair of each port is served by the runtime: polled by
/// the threads of one poll group (the default), or woken by the front-end's kicks on the runtime's event threads
/// (--event-driven). Buffers come from one packet pool per serving thread, shared by every port the thread serves,
/// so an idle port costs no pool of its own.
/// </summary>
internal sealed class NetForwarder : IDisposable
{
    public static readonly string[] Modes = ["io", "macswap", "rxonly", "txonly", "switch", "responder"];

    private readonly Port[] _ports;
    private readonly string _mode;
    private readonly int _pairs;
    private readonly int _txSize;
    private readonly CancellationTokenSource _stop = new();
    private readonly MacTable _macTable;
    private readonly PollGroup? _group;
    private readonly VhostRuntime? _runtime;
    private readonly System.Collections.Concurrent.ConcurrentBag<ThreadResources> _resources = [];

    private readonly long _txLimit;
    private readonly TimeSpan _startDelay;
    private readonly bool _startOnKick;
    private readonly bool _client;

    public NetForwarder(string[] paths, string mode, int pairs, int txSize, bool client, ILoggerFactory lf, long txLimit = 0,
        TimeSpan startDelay = default, bool startOnKick = false, int threads = 0, bool eventDriven = false, int macTableSize = MacTable.DefaultCapacity,
        bool iommu = false)
    {
        _macTable = new MacTable(macTableSize);
        _txLimit = txLimit;
        _startDelay = startDelay;
        _startOnKick = startOnKick;
        _client = client;
        _mode = mode;
        _pairs = Math.Max(1, pairs);
        _txSize = Math.Clamp(txSize, 60, 9000);
        if (threads <= 0) threads = Math.Clamp(paths.Length * _pairs, 1, Environment.ProcessorCount);
        Threads = threads;
        EventDriven = eventDriven;
        if (mode != "switch")
        {
            if (eventDriven) _runtime = new VhostRuntime(new VhostRuntimeOptions { EventThreads = threads, LoggerFactory = lf });
            else _group = new PollGroup(threads, "vhost-net-poll", lf);
        }
        _ports = new Port[paths.Length];
        for (int i = 0; i < paths.Length; i++)
        {
            var port = new Port(this, i, paths[i]);
            var options = NetFeatures.Options(paths[i], _pairs, port, client, lf, _runtime);
            options.Iommu = iommu;
            port.Socket = new VhostUserSocket(options);
            _ports[i] = port;
        }
    }

    public int Threads { get; }

    public bool EventDriven { get; }

    public int Run(double period, bool json)
    {
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; _stop.Cancel(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; _stop.Cancel(); });
        foreach (var p in _ports) p.Socket.Start();
        Console.Out.WriteLine($"vhost net: {_mode} on {string.Join(", ", _ports.Select(p => p.Path))} ({_pairs} queue pair(s) per port, "
            + (_mode == "switch" ? "1 switch thread)" : $"{Threads} {(EventDriven ? "event" : "polling")} thread(s))"));
        Console.Out.WriteLine($"vhost net: {(_client ? "connecting to" : "waiting for a front-end on")} {string.Join(", ", _ports.Select(p => p.Path))}");
        Console.Out.Flush();
        Thread? switchThread = null;
        if (_mode == "switch")
        {
            switchThread = new Thread(SwitchLoop) { IsBackground = true, Name = "switch" };
            switchThread.Start();
        }
        var sw = Stopwatch.StartNew();
        var last = _ports.Select(p => p.Snapshot()).ToArray();
        double lastT = 0;
        while (!_stop.Token.WaitHandle.WaitOne(period > 0 ? TimeSpan.FromSeconds(period) : Timeout.InfiniteTimeSpan))
        {
            double now = sw.Elapsed.TotalSeconds, dt = now - lastT;
            lastT = now;
            for (int i = 0; i < _ports.Length; i++)
            {
                var s = _ports[i].Snapshot();
                var d = s - last[i];
                last[i] = s;
                // a port without a device has nothing to report (a line of zeros a second while waiting says nothing)
                if (_ports[i].Device == null && d == default) continue;
                Console.Out.WriteLine(json
                    ? $"{{\"port\":{i},\"rx_pps\":{d.RxPackets / dt:F0},\"tx_pps\":{d.TxPackets / dt:F0},\"rx_bps\":{d.RxBytes * 8 / dt:F0},\"tx_bps\":{d.TxBytes * 8 / dt:F0}}}"
                    : $"port {i}: rx {d.RxPackets / dt,12:N0} pps {d.RxBytes * 8 / dt / 1e6,10:N1} Mbit/s   tx {d.TxPackets / dt,12:N0} pps {d.TxBytes * 8 / dt / 1e6,10:N1} Mbit/s");
            }
            Console.Out.Flush();
        }
        switchThread?.Join(TimeSpan.FromSeconds(2));
        // the sockets go first: their devices stop, so no thread serves a port while the totals are read
        foreach (var p in _ports) p.Socket.Dispose();
        _group?.Dispose();
        for (int i = 0; i < _ports.Length; i++)
        {
            var s = _ports[i].Snapshot();
            Console.Out.WriteLine(json
                ? $"{{\"port\":{i},\"total\":true,\"rx_packets\":{s.RxPackets},\"tx_packets\":{s.TxPackets},\"rx_bytes\":{s.RxBytes},\"tx_bytes\":{s.TxBytes},\"dropped\":{s.Dropped}}}"
                : $"port {i} totals: rx {s.RxPackets} packets {s.RxBytes} bytes, tx {s.TxPackets} packets {s.TxBytes} bytes, dropped {s.Dropped}");
        }
        if (_mode == "switch")
        {
            Console.Out.WriteLine(json
                ? $"{{\"mac_table\":true,\"learned\":{_macTable.Count},\"capacity\":{_macTable.Capacity},\"refused\":{_macTable.Refused}}}"
                : $"mac table: {_macTable.Count} of {_macTable.Capacity} learned, {_macTable.Refused} learnings refused (table full)");
        }
        foreach (var p in _ports)
        {
            if ((p.Device ?? p.LastDevice) is not { } dev) continue;
            for (int q = 0; q < 2 * _pairs; q++)
            {
                var st = VirtioNet.Stats(dev, q);
                if (st.Packets == 0 && st.Dropped == 0) continue;
                var nonzero = st.Xstats().Where(x => x.Value != 0).Select(x => json ? $"\"{x.Name}\":{x.Value}" : $"{x.Name}={x.Value}");
                Console.Out.WriteLine(json
                    ? $"{{\"port\":{p.Id},\"queue\":{q},{string.Join(",", nonzero)}}}"
                    : $"port {p.Id} queue {q}: {string.Join(" ", nonzero)}");
            }
        }
        return 0;
    }

    /// <summary>What a serving thread forwards with: its packet pool and burst arrays, shared by every port it serves.</summary>
    private sealed class ThreadResources : IDisposable
    {
        public readonly PacketPool Pool = new(8192);
        public readonly Packet[] Burst = new Packet[32];
        public readonly Packet[] Replies = new Packet[32];
        public Packet[]? Template;

        public void Dispose() => Pool.Dispose();
    }

    [ThreadStatic]
    private static ThreadResources? t_resources;

    private ThreadResources Resources()
    {
        var r = t_resources;
        if (r != null) return r;
        r = new ThreadResources();
        if (_mode == "txonly")
        {
            r.Template = new Packet[32];
            var frame = Frames.TxOnly(_txSize);
            for (int i = 0; i < r.Template.Length; i++) r.Pool.TryCreate(frame, out r.Template[i]);
        }
        _resources.Add(r);
        t_resources = r;
        return r;
    }

    /// <summary>One burst each way on queue pair <paramref name="qp"/> of <paramref name="port"/>; true when it moved frames.</summary>
    private bool ServePair(Port port, VhostDevice dev, int qp)
    {
        var res = Resources();
        ref var pair = ref port.Pairs[qp];
        if (pair.Device != dev)
        {
            pair.Device = dev;
            pair.SendFrom = Environment.TickCount64 + (long)_startDelay.TotalMilliseconds;
            pair.Kicked = !_startOnKick;
            pair.DrainTick = 0;
        }
        var pool = res.Pool;
        var burst = res.Burst;
        if (_mode == "txonly")
        {
            // DPDK's virtio driver fills its receive rings, then discards whatever is already used in them
            // (virtio_dev_start), and that happens after the device is ready here: an exact count needs a wait,
            // which --start-on-kick ties to the kick that follows the discard
            if (Environment.TickCount64 < pair.SendFrom) return false;
            if (!pair.Kicked && !(pair.Kicked = WasKicked(dev, 2 * qp))) return false;
            var template = res.Template!;
            int want = template.Length;
            if (_txLimit > 0) want = (int)Math.Min(want, _txLimit - Volatile.Read(ref port.TxPackets));
            int sent = want > 0 ? VirtioNet.EnqueueBurst(dev, 2 * qp, template.AsSpan(0, want)) : 0;
            if (sent > 0) port.CountTx(template.AsSpan(0, sent));
            // txonly never receives: drain and drop what the guest sends, when the guest's ring had no room
            // (it may be waiting for its own transmissions to complete) or every sixteenth pass
            if (sent < want || (++pair.DrainTick & 15) == 0)
            {
                int d = VirtioNet.DequeueBurst(dev, 2 * qp + 1, pool, burst);
                pool.Free(burst.AsSpan(0, d));
            }
            return sent > 0;
        }
        // frames that waited for an IOTLB update go first (the update gives this queue a turn)
        bool flushed = pair.Backlog is { } backlog && backlog.Holds(dev) && port.Flush(dev, 2 * qp, backlog);
        int n = VirtioNet.DequeueBurst(dev, 2 * qp + 1, pool, burst);
        if (n == 0) return flushed;
        port.CountRx(burst.AsSpan(0, n));
        switch (_mode)
        {
            case "rxonly":
                break;
            case "io":
                port.Send(dev, 2 * qp, burst.AsSpan(0, n));
                break;
            case "macswap":
                for (int i = 0; i < n; i++) Frames.SwapMacs(burst[i].Data);
                port.Send(dev, 2 * qp, burst.AsSpan(0, n));
                break;
            case "responder":
                int r = 0;
                var replies = res.Replies;
                for (int i = 0; i < n; i++)
                    if (Frames.Respond(burst[i])) replies[r++] = burst[i];
                port.Send(dev, 2 * qp, replies.AsSpan(0, r));
                break;
        }
        pool.Free(burst.AsSpan(0, n));
        return true;
    }

    /// <summary>
    /// Whether the front-end has kicked the queue since the last look (clearing the count). A queue without a kick fd
    /// will never be kicked, so it counts as kicked; a fd closed under us (the device going away) as not.
    /// </summary>
    private static bool WasKicked(VhostDevice dev, int queue)
    {
        if (dev.Queues[queue].KickFd is not { } fd) return true;
        try
        {
            return Vhost.Interop.EventFd.TryConsume(fd) > 0;
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
    }

    /// <summary>A MAC-learning switch between every port (DPDK examples/vhost): one thread, so no locks.</summary>
    private void SwitchLoop()
    {
        using var pool = new PacketPool(16384);
        var burst = new Packet[32];
        var one = new Packet[1];
        var backoff = new IdleBackoff();
        while (!_stop.IsCancellationRequested)
        {
            bool idle = true;
            foreach (var port in _ports)
            {
                var dev = port.Device;
                if (dev == null || !dev.IsRunning) continue;
                for (int qp = 0; qp < _pairs; qp++)
                {
                    int n = VirtioNet.DequeueBurst(dev, 2 * qp + 1, pool, burst);
                    if (n == 0) continue;
                    idle = false;
                    port.CountRx(burst.AsSpan(0, n));
                    for (int i = 0; i < n; i++)
                    {
                        var data = burst[i].Data;
                        _macTable.Learn(Frames.Mac(data, 6), port.Id);
                        one[0] = burst[i];
                        bool unicast = (data[0] & 1) == 0;
                        if (unicast && _macTable.TryGetPort(Frames.Mac(data, 0), out int to) && to != port.Id)
                        {
                            SendTo(_ports[to], one);
                        }
                        else
                        {
                            foreach (var other in _ports)
                                if (other != port) SendTo(other, one);
                        }
                    }
                    pool.Free(burst.AsSpan(0, n));
                }
            }
            backoff.After(idle);
        }
    }

    private static void SendTo(Port port, Packet[] one)
    {
        var dev = port.Device;
        if (dev == null || !dev.IsRunning) { port.Dropped++; return; }
        port.Send(dev, 0, one);
    }

    public void Dispose()
    {
        _stop.Cancel();
        foreach (var p in _ports) p.Socket?.Dispose();
        _group?.Dispose();
        _runtime?.Dispose();
        foreach (var r in _resources) r.Dispose();
    }

    /// <summary>What the forwarder keeps per queue pair of a port's current device.</summary>
    private struct PairState
    {
        public VhostDevice? Device;
        public long SendFrom;
        public bool Kicked;
        public int DrainTick;
        /// <summary>Receive frames waiting for an IOTLB update (made at the pair's first miss).</summary>
        public RxBacklog? Backlog;
    }

    /// <summary>
    /// Frames for a receive queue whose next buffer's IOTLB entry is missing: a guest under a strict vIOMMU maps
    /// each receive buffer just before posting it, so the first frame into it always misses. The frames are copied
    /// into the pair's own pool (the forwarding thread's pool stays its own) and sent, in order, once the update
    /// has come; a full backlog drops and counts.
    /// </summary>
    internal sealed class RxBacklog
    {
        public const int Capacity = 256;
        private readonly PacketPool _pool = new(2 * Capacity);
        public readonly Packet[] Frames = new Packet[Capacity];
        private VhostDevice? _device;

        public int Count { get; private set; }

        /// <summary>Whether it holds frames for <paramref name="device"/>; frames for an earlier device are let go.</summary>
        public bool Holds(VhostDevice device)
        {
            if (_device != device) Clear();
            return Count > 0;
        }

        /// <summary>Copies frames in behind the rest; returns how many did not fit.</summary>
        public int Add(VhostDevice device, ReadOnlySpan<Packet> packets)
        {
            if (_device != device) Clear();
            _device = device;
            int i = 0;
            for (; i < packets.Length && Count < Capacity; i++)
            {
                if (!_pool.TryCopy(packets[i], out Frames[Count])) break;
                Count++;
            }
            return packets.Length - i;
        }

        /// <summary>The first <paramref name="n"/> frames reached the guest.</summary>
        public void Sent(int n)
        {
            _pool.Free(Frames.AsSpan(0, n));
            Frames.AsSpan(n, Count - n).CopyTo(Frames);
            Count -= n;
        }

        private void Clear()
        {
            _pool.Free(Frames.AsSpan(0, Count));
            Count = 0;
            _device = null;
        }
    }

    private sealed class Port(NetForwarder owner, int id, string path) : VhostDeviceOps, IQueueHandler
    {
        public int Id { get; } = id;

        public string Path { get; } = path;

        public VhostUserSocket Socket = null!;

        public volatile VhostDevice? Device;

        public long RxPackets, RxBytes, TxPackets, TxBytes, Dropped;

        public readonly PairState[] Pairs = new PairState[owner._pairs];

        public override bool NewDevice(VhostDevice device)
        {
            Device = device;
            if (owner._mode != "switch")
            {
                for (int qp = 0; qp < owner._pairs && 2 * qp + 1 < device.Queues.Count; qp++)
                {
                    // polled queues ask for no kicks: a kick would only cost the front-end an eventfd write per burst
                    if (!owner.EventDriven)
                    {
                        device.EnableGuestNotification(2 * qp, false);
                        device.EnableGuestNotification(2 * qp + 1, false);
                    }
                    device.Serve(2 * qp + 1, this, owner.EventDriven ? QueueMode.Event : QueueMode.Polling, owner._group);
                }
            }
            else
            {
                for (int q = 0; q < device.Queues.Count; q++) device.EnableGuestNotification(q, false);
            }
            Console.Out.WriteLine($"port {Id}: device {device.Id} ready (features 0x{device.Features:x})");
            return true;
        }

        /// <summary>The runtime serves the port's transmit queue 2qp+1: one burst each way on that queue pair.</summary>
        public bool Serve(VhostDevice device, int queue)
        {
            if (!device.IsRunning) return false;
            if (owner.ServePair(this, device, queue >> 1)) return true;
            if (!owner.EventDriven) return false;
            // event-driven and the ring ran dry: re-arm the kick (avail_event or the event flags), then look once
            // more, for what the driver added before it could see the re-arm
            device.EnableGuestNotification(queue, true);
            return owner.ServePair(this, device, queue >> 1);
        }

        /// <summary>The last device seen, for its queue statistics at exit.</summary>
        public VhostDevice? LastDevice;

        public override void DestroyDevice(VhostDevice device)
        {
            LastDevice = device;
            if (Device == device) Device = null;
            Console.Out.WriteLine($"port {Id}: device {device.Id} gone");
        }

        public void CountRx(ReadOnlySpan<Packet> packets)
        {
            long bytes = 0;
            foreach (var p in packets) bytes += p.Length;
            // queue pairs of one port may be served by different threads
            Interlocked.Add(ref RxPackets, packets.Length);
            Interlocked.Add(ref RxBytes, bytes);
        }

        public void CountTx(ReadOnlySpan<Packet> packets)
        {
            long bytes = 0;
            foreach (var p in packets) bytes += p.Length;
            Interlocked.Add(ref TxPackets, packets.Length);
            Interlocked.Add(ref TxBytes, bytes);
        }

        /// <summary>
        /// Sends, retrying briefly while the guest refills its ring, then drops what is left; frames held back by a
        /// missing IOTLB entry wait in the pair's backlog instead, and everything later queues behind them.
        /// </summary>
        public void Send(VhostDevice dev, int queue, ReadOnlySpan<Packet> packets)
        {
            ref var pair = ref Pairs[queue >> 1];
            if (pair.Backlog is { } backlog && backlog.Holds(dev) && !Flush(dev, queue, backlog))
            {
                Hold(backlog, dev, packets);
                return;
            }
            int done = 0;
            for (int tries = 0; done < packets.Length && tries < 64; tries++)
            {
                int n = VirtioNet.EnqueueBurst(dev, queue, packets[done..]);
                done += n;
                if (n == 0)
                {
                    if (WaitsForIotlb(dev, queue)) break;
                    Thread.SpinWait(1);
                }
            }
            CountTx(packets[..done]);
            if (done == packets.Length) return;
            if (WaitsForIotlb(dev, queue)) Hold(pair.Backlog ??= new RxBacklog(), dev, packets[done..]);
            else Interlocked.Add(ref Dropped, packets.Length - done);
        }

        /// <summary>Sends what the backlog holds for queue <paramref name="queue"/>; true when it is empty after.</summary>
        public bool Flush(VhostDevice dev, int queue, RxBacklog backlog)
        {
            if (backlog.Count == 0) return true;
            int n = VirtioNet.EnqueueBurst(dev, queue, backlog.Frames.AsSpan(0, backlog.Count));
            if (n > 0)
            {
                CountTx(backlog.Frames.AsSpan(0, n));
                backlog.Sent(n);
            }
            return backlog.Count == 0;
        }

        private void Hold(RxBacklog backlog, VhostDevice dev, ReadOnlySpan<Packet> packets)
        {
            int lost = backlog.Add(dev, packets);
            if (lost > 0) Interlocked.Add(ref Dropped, lost);
        }

        /// <summary>
        /// Whether frames a receive queue did not take are kept rather than dropped: under a vIOMMU the ring cannot
        /// take them for a moment after a lookup missed, or while an IOTLB message holds the queue's lease (in polling
        /// mode the control thread takes it for every update and invalidation).
        /// </summary>
        private static bool WaitsForIotlb(VhostDevice dev, int queue)
        {
            if (dev.Iotlb == null || !dev.HasFeature(VirtioFeature.AccessPlatform)) return false;
            var q = dev.Queues[queue];
            return q.RingsAwaitIotlb || q.IsReady;
        }

        public Totals Snapshot() => new(Volatile.Read(ref RxPackets), Volatile.Read(ref RxBytes), Volatile.Read(ref TxPackets), Volatile.Read(ref TxBytes), Volatile.Read(ref Dropped));
    }

    /// <summary>
    /// How a polling loop waits when a pass found nothing: a pause per pass while work is likely near (a ring
    /// that ran dry for a moment must be seen again within nanoseconds, or the front-end stalls on a full
    /// ring), longer pauses after about a thousand empty passes in a row.
    /// </summary>
    private struct IdleBackoff
    {
        private int _idlePasses;

        public void After(bool idle)
        {
            if (!idle)
            {
                _idlePasses = 0;
                return;
            }
            if (_idlePasses < 1024) _idlePasses++;
            Thread.SpinWait(_idlePasses < 1024 ? 1 : 50);
        }
    }

    private readonly record struct Totals(long RxPackets, long RxBytes, long TxPackets, long TxBytes, long Dropped)
    {
        public static Totals operator -(Totals a, Totals b) =>
            new(a.RxPackets - b.RxPackets, a.RxBytes - b.RxBytes, a.TxPackets - b.TxPackets, a.TxBytes - b.TxBytes, a.Dropped - b.Dropped);
    }
}
