using System.Collections.Concurrent;
using System.Globalization;
using System.Text.RegularExpressions;

namespace Vhost.Interop.Tests.Peers;

/// <summary>How to start dpdk-testpmd. Defaults match the harness: 1 queue, split ring, mergeable rx, in-order.</summary>
public sealed record TestpmdOptions
{
    public int Queues { get; init; } = 1;

    /// <summary>virtio-user packed_vq.</summary>
    public bool Packed { get; init; }

    /// <summary>virtio-user mrg_rxbuf.</summary>
    public bool MergeableRx { get; init; } = true;

    /// <summary>virtio-user in_order.</summary>
    public bool InOrder { get; init; } = true;

    /// <summary>virtio-user server=1: testpmd listens, the back-end connects (our client mode).</summary>
    public bool Server { get; init; }

    /// <summary>--forward-mode (io, txonly, rxonly, 5tswap, macswap, ...).</summary>
    public string ForwardMode { get; init; } = "io";

    /// <summary>--txpkts (frame size for txonly).</summary>
    public int? TxPackets { get; init; }

    /// <summary>--main-lcore; pin two testpmds apart (0 for one, 1 for the other).</summary>
    public int MainLcore { get; init; }

    /// <summary>--no-flush-rx.</summary>
    public bool NoFlushRx { get; init; } = true;

    /// <summary>More EAL arguments (before "--").</summary>
    public IReadOnlyList<string> ExtraEalArgs { get; init; } = [];

    /// <summary>More application arguments (after "--").</summary>
    public IReadOnlyList<string> ExtraArgs { get; init; } = [];

    /// <summary>The process is killed after this long whatever happens.</summary>
    public TimeSpan Lifetime { get; init; } = TimeSpan.FromSeconds(180);

    /// <summary>How long to wait for the port to come up (testpmd with --no-huge needs several seconds).</summary>
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(60);
}

/// <summary>One port's counters from testpmd's periodic "NIC statistics" or final "Forward statistics".</summary>
public readonly record struct TestpmdPortStats(int Port, long RxPackets, long TxPackets, long RxPps, long TxPps);

/// <summary>
/// dpdk-testpmd as a virtio-user front-end (<see cref="StartVirtioUser"/>) or as DPDK's own vhost back-end
/// (<see cref="StartVhostBackEnd"/>), always with <c>-l 0,1 --no-huge -m 1024 --no-pci</c>, a unique
/// --file-prefix, <c>--stats-period 1 --total-num-mbufs=16384</c>, logging to a file and parsing the stats.
/// </summary>
public sealed partial class Testpmd : PeerProcess
{
    private readonly ConcurrentDictionary<int, TestpmdPortStats> _latest = new();
    private readonly ConcurrentDictionary<int, TestpmdPortStats> _final = new();
    private int _blockPort = int.MinValue;
    private bool _finalBlock;
    private long _rx, _tx, _rxPps;
    private int _samples;

    private Testpmd(string vdev, TestpmdOptions o, PeerTempDir dir, string logName)
        : base("dpdk-testpmd", BuildArgs(vdev, o, logName), dir.File(logName + ".log"), o.Lifetime)
    {
        Options = o;
    }

    public TestpmdOptions Options { get; }

    /// <summary>Socket path of the virtio-user or vhost device.</summary>
    public string SocketPath { get; private set; } = "";

    /// <summary>Latest periodic stats of each port.</summary>
    public IReadOnlyDictionary<int, TestpmdPortStats> Latest => _latest;

    /// <summary>Final "Forward statistics" per port after <see cref="Stop"/>; port -1 holds the accumulated line.</summary>
    public IReadOnlyDictionary<int, TestpmdPortStats> Final => _final;

    /// <summary>Periodic stats blocks seen so far.</summary>
    public int Samples => Volatile.Read(ref _samples);

    /// <summary>Every periodic Tx-pps / Rx-pps sample of port 0, in order.</summary>
    public ConcurrentQueue<TestpmdPortStats> History { get; } = new();

    /// <summary>
    /// testpmd with <c>--vdev net_virtio_user0,path=PATH,queues=..,packed_vq=..,mrg_rxbuf=..,in_order=..[,server=1]</c>.
    /// Waits until the device probed (or, for server=1, until the socket is listening).
    /// </summary>
    public static Testpmd StartVirtioUser(string path, PeerTempDir dir, TestpmdOptions? options = null)
    {
        var o = options ?? new TestpmdOptions();
        var vdev = string.Create(CultureInfo.InvariantCulture,
            $"net_virtio_user0,path={path},queues={o.Queues},packed_vq={B(o.Packed)},mrg_rxbuf={B(o.MergeableRx)},in_order={B(o.InOrder)}");
        if (o.Server) vdev += ",server=1";
        var t = new Testpmd(vdev, o, dir, "testpmd-virtio-user-" + Guid.NewGuid().ToString("N")[..6]) { SocketPath = path };
        t.WaitStarted(o.Server ? path : null);
        return t;
    }

    /// <summary>testpmd with DPDK's vhost PMD: <c>--vdev net_vhost0,iface=PATH,queues=N</c> (server socket).
    /// Waits until the socket exists.</summary>
    public static Testpmd StartVhostBackEnd(string iface, PeerTempDir dir, TestpmdOptions? options = null)
    {
        var o = options ?? new TestpmdOptions();
        var vdev = string.Create(CultureInfo.InvariantCulture, $"net_vhost0,iface={iface},queues={o.Queues}");
        var t = new Testpmd(vdev, o, dir, "testpmd-vhost-" + Guid.NewGuid().ToString("N")[..6]) { SocketPath = iface };
        t.WaitStarted(iface);
        return t;
    }

    private static int B(bool b) => b ? 1 : 0;

    private static List<string> BuildArgs(string vdev, TestpmdOptions o, string tag)
    {
        var a = new List<string>
        {
            "-l", "0,1", "--main-lcore", o.MainLcore.ToString(CultureInfo.InvariantCulture),
            "--no-huge", "-m", "1024", "--no-pci", $"--file-prefix={PeerTempDir.UniquePrefix("tp")}",
            "--vdev", vdev,
        };
        a.AddRange(o.ExtraEalArgs);
        a.Add("--");
        a.Add($"--forward-mode={o.ForwardMode}");
        if (o.TxPackets is { } size) a.Add(string.Create(CultureInfo.InvariantCulture, $"--txpkts={size}"));
        if (o.NoFlushRx) a.Add("--no-flush-rx");
        a.AddRange(["--stats-period", "1", "--total-num-mbufs=16384"]);
        a.AddRange(o.ExtraArgs);
        _ = tag;
        return a;
    }

    private void WaitStarted(string? socket)
    {
        var end = DateTime.UtcNow + Options.StartTimeout;
        while (DateTime.UtcNow < end)
        {
            var output = Output;
            if (output.Contains("No probed ethernet devices", StringComparison.Ordinal) ||
                output.Contains("Bus (vdev) probe failed", StringComparison.Ordinal))
            {
                Kill();
                throw new InvalidOperationException($"testpmd probed no device:\n{Tail()}");
            }
            if (HasExited) throw new InvalidOperationException($"testpmd exited ({Exited.Result}) while starting:\n{Tail()}");
            bool forwarding = output.Contains("start packet forwarding", StringComparison.Ordinal);
            if (socket == null ? forwarding : File.Exists(socket)) return;
            Thread.Sleep(50);
        }
        Kill();
        throw new TimeoutException($"testpmd did not start in {Options.StartTimeout}:\n{Tail()}");
    }

    [GeneratedRegex(@"(NIC|Forward) statistics for port\s+(\d+)")]
    private static partial Regex PortHeader();

    [GeneratedRegex(@"Accumulated forward statistics")]
    private static partial Regex AccumulatedHeader();

    [GeneratedRegex(@"(RX-packets|TX-packets|Rx-pps|Tx-pps):\s+(\d+)")]
    private static partial Regex Counter();

    protected override void OnLine(string line)
    {
        var h = PortHeader().Match(line);
        if (h.Success)
        {
            _blockPort = int.Parse(h.Groups[2].Value, CultureInfo.InvariantCulture);
            _finalBlock = h.Groups[1].Value == "Forward";
            _rx = _tx = _rxPps = 0;
            return;
        }
        if (AccumulatedHeader().IsMatch(line))
        {
            _blockPort = -1;
            _finalBlock = true;
            _rx = _tx = 0;
            return;
        }
        if (_blockPort == int.MinValue) return;
        foreach (Match m in Counter().Matches(line))
        {
            long v = long.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture);
            switch (m.Groups[1].Value)
            {
                case "RX-packets": _rx = v; break;
                case "TX-packets":
                    _tx = v;
                    if (_finalBlock)
                    {
                        _final[_blockPort] = new TestpmdPortStats(_blockPort, _rx, _tx, 0, 0);
                        _blockPort = int.MinValue;
                    }
                    break;
                case "Rx-pps": _rxPps = v; break;
                case "Tx-pps":
                    var s = new TestpmdPortStats(_blockPort, _rx, _tx, _rxPps, v);
                    _latest[_blockPort] = s;
                    if (_blockPort == 0) History.Enqueue(s);
                    Interlocked.Increment(ref _samples);
                    _blockPort = int.MinValue;
                    break;
            }
        }
    }

    /// <summary>Waits until port <paramref name="port"/>'s periodic stats satisfy <paramref name="predicate"/>.</summary>
    public TestpmdPortStats? WaitForStats(Func<TestpmdPortStats, bool> predicate, TimeSpan timeout, int port = 0)
    {
        var end = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < end && !HasExited)
        {
            if (_latest.TryGetValue(port, out var s) && predicate(s)) return s;
            Thread.Sleep(100);
        }
        return _latest.TryGetValue(port, out var last) && predicate(last) ? last : null;
    }

    /// <summary>SIGINT (testpmd prints its final statistics and closes its ports), wait, then kill.
    /// Returns the exit code (-1 if it had to be killed and never reported).</summary>
    public int Stop(TimeSpan? timeout = null) => Interrupt(timeout ?? TimeSpan.FromSeconds(20));
}
