using System.Text.Json;

namespace Vhost.Interop.Tests.Peers;

/// <summary>Our own `vhost` tool as a separate process, the way a user runs it.</summary>
public sealed class VhostTool : PeerProcess
{
    private VhostTool(IReadOnlyList<string> args, string log, TimeSpan lifetime)
        : base("dotnet", args, log, lifetime) { }

    public static VhostTool StartNet(PeerTempDir dir, string fwd, IEnumerable<string> sockets, params string[] extra)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "Vhost.Cli.dll");
        var args = new List<string> { dll, "net", "--fwd", fwd, "--json", "--stats-period", "1" };
        foreach (var s in sockets) { args.Add("--socket"); args.Add(s); }
        args.AddRange(extra);
        var tool = new VhostTool(args, dir.File($"vhost-{fwd}.log"), TimeSpan.FromSeconds(240));
        foreach (var s in sockets) WaitFor(() => File.Exists(s), TimeSpan.FromSeconds(30), $"vhost made no socket {s}:\n{tool.Tail()}");
        return tool;
    }

    /// <summary>`vhost blk --socket SOCK ...` (server mode unless --client is in <paramref name="extra"/>); waits for the socket.</summary>
    public static VhostTool StartBlk(PeerTempDir dir, string socket, params string[] extra)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "Vhost.Cli.dll");
        var args = new List<string> { dll, "blk", "--socket", socket, "--stats-period", "0.1" };
        args.AddRange(extra);
        if (File.Exists(socket)) File.Delete(socket);
        var tool = new VhostTool(args, dir.File($"vhost-blk-{Guid.NewGuid():N}"[..20] + ".log"), TimeSpan.FromSeconds(240));
        WaitFor(() => File.Exists(socket), TimeSpan.FromSeconds(30), $"vhost made no socket {socket}:\n{tool.Tail()}");
        return tool;
    }

    /// <summary>`vhost crypto --socket SOCK ...` (server mode); waits for the socket.</summary>
    public static VhostTool StartCrypto(PeerTempDir dir, string socket, params string[] extra)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "Vhost.Cli.dll");
        var args = new List<string> { dll, "crypto", "--socket", socket, "--stats-period", "0.5" };
        args.AddRange(extra);
        if (File.Exists(socket)) File.Delete(socket);
        var tool = new VhostTool(args, dir.File($"vhost-crypto-{Guid.NewGuid():N}"[..20] + ".log"), TimeSpan.FromSeconds(240));
        WaitFor(() => File.Exists(socket), TimeSpan.FromSeconds(30), $"vhost made no socket {socket}:\n{tool.Tail()}");
        return tool;
    }

    /// <summary>`vhost blk --client --socket SOCK ...`: returns once the tool has started; it connects when the socket appears.</summary>
    public static VhostTool StartBlkClient(PeerTempDir dir, string socket, params string[] extra)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "Vhost.Cli.dll");
        var args = new List<string> { dll, "blk", "--client", "--socket", socket, "--stats-period", "0.1" };
        args.AddRange(extra);
        var tool = new VhostTool(args, dir.File($"vhost-blkc-{Guid.NewGuid():N}"[..20] + ".log"), TimeSpan.FromSeconds(240));
        WaitFor(() => tool.Output.Contains("vhost blk:", StringComparison.Ordinal), TimeSpan.FromSeconds(30), $"vhost blk did not start:\n{tool.Tail()}");
        return tool;
    }

    public void WaitReady(int count = 1, TimeSpan? timeout = null) =>
        WaitFor(() => Output.Split('\n').Count(l => l.Contains("ready", StringComparison.Ordinal)) >= count,
            timeout ?? TimeSpan.FromSeconds(60), $"vhost saw no device:\n{Tail()}");

    /// <summary>Per-port totals of the JSON line the tool prints at exit.</summary>
    public Dictionary<int, (long Rx, long Tx, long Dropped)> Totals()
    {
        var d = new Dictionary<int, (long, long, long)>();
        foreach (var line in Output.Split('\n'))
        {
            if (!line.Contains("\"total\":true", StringComparison.Ordinal)) continue;
            using var j = JsonDocument.Parse(line);
            var r = j.RootElement;
            d[r.GetProperty("port").GetInt32()] = (r.GetProperty("rx_packets").GetInt64(), r.GetProperty("tx_packets").GetInt64(), r.GetProperty("dropped").GetInt64());
        }
        return d;
    }

    internal static void WaitFor(Func<bool> cond, TimeSpan timeout, string message)
    {
        var end = DateTime.UtcNow + timeout;
        while (!cond())
        {
            if (DateTime.UtcNow > end) throw new TimeoutException(message);
            Thread.Sleep(50);
        }
    }
}
