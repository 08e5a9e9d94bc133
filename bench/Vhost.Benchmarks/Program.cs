using BenchmarkDotNet.Running;

BenchmarkSwitcher.FromAssembly(typeof(Vhost.Benchmarks.NetBurstBenchmarks).Assembly).Run(args);
