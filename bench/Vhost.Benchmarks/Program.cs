using System.Diagnostics;
using BenchmarkDotNet.Running;
using Vhost.Benchmarks;

if (args.Length > 0 && args[0] == "--loop")
{
    // quick look without BenchmarkDotNet's process orchestration: ns per burst, best of ROUNDS rounds (default 5;
    // more lets tiered compilation finish, and a profiler see the steady state), first round dropped as warm-up
    int rounds = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 5;
    foreach (var (packed, logging) in new[] { (false, false), (false, true), (true, false), (true, true) })
    {
        var b = new NetBurstBenchmarks { Packed = packed, Logging = logging };
        b.Setup();
        foreach (var (name, op) in new (string, Func<int>)[] { ("Dequeue", b.Dequeue), ("Enqueue", b.Enqueue) })
        {
            double best = double.MaxValue;
            for (int round = 0; round <= rounds; round++)
            {
                var sw = Stopwatch.StartNew();
                for (int i = 0; i < 100_000; i++) op();
                if (round > 0) best = Math.Min(best, sw.Elapsed.TotalNanoseconds / 100_000);
            }
            Console.WriteLine($"{name,-8} packed={packed,-5} logging={logging,-5} {best,8:F0} ns/burst {best / 32,6:F1} ns/frame");
        }
        b.Cleanup();
    }
    return;
}
BenchmarkSwitcher.FromAssembly(typeof(NetBurstBenchmarks).Assembly).Run(args);
