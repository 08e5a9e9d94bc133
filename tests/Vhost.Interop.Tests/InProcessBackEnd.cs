using Microsoft.Extensions.Logging;
using Vhost.Device;
using Vhost.Protocol;
using Vhost.Rings;
using Vhost.Testing.BackEnd;
using Vhost.Transport;

namespace Vhost.Interop.Tests;

/// <summary>
/// A net-like back-end built on our library in the test process: a VhostUserSocket (2 queues, both needed
/// for readiness, the default features plus VIRTIO_NET_F_MRG_RXBUF), recording callbacks, and a consumer
/// thread that drains queue 1 (the guest's TX) while the device runs: Pop, count, PushUsed(chain, 0), FlushUsed.
/// </summary>
internal sealed class InProcessBackEnd : IDisposable
{
    public const int NetMrgRxBuf = 15;

    private readonly ConsumerOps _ops;
    private long _chains, _bytes;

    public InProcessBackEnd(string path, bool client = false)
    {
        _ops = new ConsumerOps(this);
        Options = new VhostSocketOptions
        {
            Path = path,
            Client = client,
            MaxQueues = 2,
            QueuesRequiredForReady = 2,
            Features = VhostSocketOptions.DefaultFeatures | (1UL << NetMrgRxBuf),
            Ops = _ops,
            LoggerFactory = LoggerFactory.Create(b => b.AddProvider(Logs).SetMinimumLevel(LogLevel.Debug)),
            ReconnectInterval = TimeSpan.FromSeconds(1),
        };
        Socket = new VhostUserSocket(Options);
        Socket.Start();
    }

    public VhostSocketOptions Options { get; }

    public VhostUserSocket Socket { get; }

    public RecordingOps Ops { get; } = new();

    public CapturingLoggerProvider Logs { get; } = new();

    public long Chains => Interlocked.Read(ref _chains);

    public long Bytes => Interlocked.Read(ref _bytes);

    /// <summary>What the device looked like when new_device fired.</summary>
    public NewDeviceSnapshot? AtNew { get; private set; }

    public string LogText => string.Join('\n', Logs.Lines.Select(l => $"{l.Level}: {l.Text}"));

    public bool WaitChains(long atLeast, TimeSpan timeout)
    {
        var end = DateTime.UtcNow + timeout;
        while (Chains < atLeast && DateTime.UtcNow < end) Thread.Sleep(50);
        return Chains >= atLeast;
    }

    public void Dispose() => Socket.Dispose();

    public sealed record NewDeviceSnapshot(ulong Features, int MemoryRegions, bool[] QueuesReady, bool Packed)
    {
        public override string ToString() => $"features 0x{Features:x}, {MemoryRegions} memory regions, queues ready [{string.Join(',', QueuesReady)}], packed {Packed}";
    }

    private sealed class ConsumerOps(InProcessBackEnd owner) : VhostDeviceOps
    {
        private volatile CancellationTokenSource? _stop;
        private Thread? _thread;

        public override bool NewDevice(VhostDevice device)
        {
            owner.AtNew = new NewDeviceSnapshot(device.Features, device.Memory.Count,
                [.. device.Queues.Select(q => q.IsReady)], device.HasFeature(VirtioFeature.RingPacked));
            if (!owner.Ops.NewDevice(device)) return false;
            var stop = new CancellationTokenSource();
            _stop = stop;
            _thread = new Thread(() => Consume(device, stop.Token)) { IsBackground = true, Name = "interop-consumer" };
            _thread.Start();
            return true;
        }

        public override void DestroyDevice(VhostDevice device)
        {
            _stop?.Cancel();
            _thread?.Join(TimeSpan.FromSeconds(5));
            _thread = null;
            owner.Ops.DestroyDevice(device);
        }

        public override void VringStateChanged(VhostDevice device, int queueId, bool enable) => owner.Ops.VringStateChanged(device, queueId, enable);

        public override void FeaturesChanged(VhostDevice device, ulong features) => owner.Ops.FeaturesChanged(device, features);

        public override void GuestNotified(VhostDevice device) => owner.Ops.GuestNotified(device);

        private void Consume(VhostDevice device, CancellationToken stop)
        {
            var q = device.Queue(1);
            var chains = new DescriptorChain[32];
            var segs = new BufferSegment[256];
            while (!stop.IsCancellationRequested)
            {
                int n;
                using (q.AccessLock.EnterScope())
                {
                    if (!q.IsReady) n = 0;
                    else
                    {
                        n = q.Pop(chains, segs);
                        long bytes = 0;
                        for (int i = 0; i < n; i++)
                        {
                            bytes += chains[i].ReadableBytes;
                            q.PushUsed(chains[i], 0);
                        }
                        if (n > 0) q.FlushUsed();
                        Interlocked.Add(ref owner._bytes, bytes);
                    }
                }
                if (n == 0) Thread.Sleep(1);
                else Interlocked.Add(ref owner._chains, n);
            }
        }
    }
}
