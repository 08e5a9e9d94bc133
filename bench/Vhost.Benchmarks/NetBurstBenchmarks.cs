using BenchmarkDotNet.Attributes;
using Vhost.Device;
using Vhost.Net;
using Vhost.Protocol;
using Vhost.Testing.BackEnd;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;

namespace Vhost.Benchmarks;

/// <summary>
/// CPU cost of one 32-frame burst of 64-byte frames, each way, over split and packed rings, with an in-order
/// driver written for the benchmark (raw ring writes, so the driver's share is small and the same for every
/// version of the back-end). Guest memory is a real memfd mapped by the back-end through the socket. Cross-core
/// cache transfers are absent here (one thread plays both sides): pvp-bench measures those. With
/// <see cref="Logging"/> the front-end has started a live migration's dirty logging (SET_LOG_BASE, LOG_ALL,
/// SET_VRING_ADDR with F_LOG, as QEMU does), so every burst also marks its pages in the log.
/// </summary>
[MemoryDiagnoser]
public class NetBurstBenchmarks
{
    private const int Burst = 32;
    private const int RingSize = 256;
    private const int FrameSize = 64;
    private const int HeaderSize = 12;

    private TestBackEnd _be = null!;
    private TestFrontEnd _fe = null!;
    private DeviceSetup _setup = null!;
    private VhostDevice _dev = null!;
    private PacketPool _pool = null!;
    private readonly Packet[] _packets = new Packet[Burst];
    private readonly Packet[] _frames = new Packet[Burst];
    private InOrderDriver _rx = null!, _tx = null!;
    private MigrationLog? _log;

    [Params(false, true)]
    public bool Packed { get; set; }

    [Params(false, true)]
    public bool Logging { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _be = new TestBackEnd(extraFeatures: NetFeatures.Default);
        _fe = _be.Connect();
        ulong want = ~(VirtioFeature.Bit(VirtioFeature.LogAll) | VirtioFeature.Bit(VirtioFeature.AccessPlatform) | VirtioFeature.Bit(VirtioFeature.RingEventIdx)
            | (Packed ? 0 : VirtioFeature.Bit(VirtioFeature.RingPacked)));
        _setup = DeviceSetup.Run(_fe, new DeviceSetupOptions
        {
            Packed = Packed, QueueSize = RingSize, MemorySize = 32 << 20, Features = want,
            ProtocolFeatures = DeviceSetupOptions.DefaultProtocolFeatures | DeviceSetupOptions.ProtocolBits(ProtocolFeature.LogShmfd),
        });
        _be.Ops.WaitFor("new");
        _dev = _be.Ops.LastNew!;
        if (Logging)
        {
            _log = new MigrationLog(_setup.Memory);
            _log.StartLogging(_fe, _setup);
            if (!_dev.IsLogging) throw new InvalidOperationException("logging did not start");
        }
        _dev.EnableGuestNotification(0, false);
        _dev.EnableGuestNotification(1, false);
        _pool = new PacketPool(1024);
        var frame = new byte[FrameSize];
        frame[0] = 0x02;
        for (int i = 0; i < Burst; i++) _pool.TryCreate(frame, out _frames[i]);
        _rx = new InOrderDriver(_setup[0], _setup.Memory, Packed, writable: true, length: 2048);
        _tx = new InOrderDriver(_setup[1], _setup.Memory, Packed, writable: false, length: HeaderSize + FrameSize);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _pool.Dispose();
        _log?.Dispose();
        _setup.Dispose();
        _fe.Dispose();
        _be.Dispose();
    }

    /// <summary>Guest to host: the guest offers 32 frames, DequeueBurst copies them into pool buffers.</summary>
    [Benchmark]
    public int Dequeue()
    {
        _tx.Offer(Burst);
        int n = VirtioNet.DequeueBurst(_dev, 1, _pool, _packets);
        _pool.Free(_packets.AsSpan(0, n));
        _tx.Reclaim();
        if (n != Burst) throw new InvalidOperationException($"dequeued {n}");
        return n;
    }

    /// <summary>Host to guest: the guest offers 32 receive buffers, EnqueueBurst fills them.</summary>
    [Benchmark]
    public int Enqueue()
    {
        _rx.Offer(Burst);
        int n = VirtioNet.EnqueueBurst(_dev, 0, _frames);
        _rx.Reclaim();
        if (n != Burst) throw new InvalidOperationException($"enqueued {n}");
        return n;
    }
}
