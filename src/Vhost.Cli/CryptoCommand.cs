using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Vhost.Crypto;
using Vhost.Transport;

namespace Vhost.Cli;

/// <summary>`vhost crypto`: a virtio-crypto back-end for QEMU's cryptodev-vhost-user, doing the work with .NET's cryptography.</summary>
internal static class CryptoCommand
{
    public static Command Create()
    {
        var socket = new Option<string>("--socket") { Description = "vhost-user socket path", Required = true };
        var client = new Option<bool>("--client") { Description = "connect to the front-end instead of listening" };
        var queues = new Option<int>("--queues") { Description = "data queues (QEMU 7.2 gives the back-end only the first)", DefaultValueFactory = _ => 1 };
        var maxData = new Option<int>("--max-data") { Description = "largest source or destination of one request, in bytes", DefaultValueFactory = _ => 1 << 20 };
        var period = new Option<double>("--stats-period") { Description = "seconds between rate lines (0: none)", DefaultValueFactory = _ => 1 };
        var verbose = new Option<bool>("--verbose") { Description = "log protocol events and every session" };
        var cmd = new Command("crypto", "virtio-crypto back-end: sessions and data queues served with .NET's cryptography (AES, 3DES, SHA, HMAC, AEAD)")
        {
            socket, client, queues, maxData, period, verbose,
        };
        cmd.SetAction(r =>
        {
            if (r.GetValue(queues) is < 1 or > 64)
            {
                Console.Error.WriteLine("--queues must be 1..64");
                return 2;
            }
            if (r.GetValue(maxData) is < 16 or > 64 << 20)
            {
                Console.Error.WriteLine("--max-data must be 16 bytes to 64 MiB");
                return 2;
            }
            using var lf = LoggerFactory.Create(b => b.AddSimpleConsole(o => o.SingleLine = true)
                .SetMinimumLevel(r.GetValue(verbose) ? LogLevel.Debug : LogLevel.Information));
            using var runtime = new Runtime.VhostRuntime(new Runtime.VhostRuntimeOptions { EventThreads = 1, LoggerFactory = lf });
            var crypto = new VirtioCrypto(new VirtioCryptoOptions { Queues = r.GetValue(queues), MaxDataLength = r.GetValue(maxData), LoggerFactory = lf });
            return Serve(crypto, r.GetValue(socket)!, r.GetValue(client), r.GetValue(period), runtime);
        });
        return cmd;
    }

    private static int Serve(VirtioCrypto crypto, string path, bool client, double period, Runtime.VhostRuntime runtime)
    {
        using var stop = new CancellationTokenSource();
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
        var socket = new VhostUserSocket(crypto.CreateSocketOptions(path, client, runtime: runtime));
        socket.Start();
        Console.Out.WriteLine($"vhost crypto: {path} ({(client ? "client" : "server")}), {crypto.QueueCount} data queue(s)");
        Console.Out.WriteLine(client ? $"vhost crypto: connecting to {path}" : $"vhost crypto: waiting for a front-end on {path}");
        Console.Out.Flush();
        var sw = Stopwatch.StartNew();
        var last = crypto.TotalStats();
        double lastT = 0;
        while (!stop.Token.WaitHandle.WaitOne(period > 0 ? TimeSpan.FromSeconds(period) : Timeout.InfiniteTimeSpan))
        {
            double now = sw.Elapsed.TotalSeconds, dt = now - lastT;
            lastT = now;
            var s = crypto.TotalStats();
            long ops = s.Requests - last.Requests;
            if (ops > 0)
            {
                Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{ops / dt,10:N0} ops/s   {(s.Bytes - last.Bytes) / dt / 1e6,9:N1} MB/s   errors {s.Failed}   sessions created {crypto.SessionsCreated}"));
                Console.Out.Flush();
            }
            last = s;
        }
        socket.Dispose();
        crypto.Dispose();
        var t = crypto.TotalStats();
        Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"totals over {sw.Elapsed.TotalSeconds:F1} s: {t.Requests} requests, {t.Bytes} bytes, {crypto.SessionsCreated} sessions, {t.Failed} refused, {t.NotSupported} unsupported, {t.InvalidSession} invalid session, {t.BadMessages} bad messages"));
        return 0;
    }
}
