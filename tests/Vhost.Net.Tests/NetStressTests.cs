using Vhost.Device;
using Vhost.Interop;
using Vhost.Protocol;
using Vhost.Runtime;
using Vhost.Testing.BackEnd;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;

namespace Vhost.Net.Tests;

/// <summary>
/// A net device forwarding on a poll thread (io: what the guest sends comes back) while the front-end changes memory
/// slots, ring addresses and fds in a loop: no exception on any thread, every transmit buffer returned exactly once.
/// </summary>
public sealed class NetStressTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(10);

    private sealed class Echo : IQueueHandler, IDisposable
    {
        private readonly PacketPool _pool = new(256);
        private readonly Packet[] _burst = new Packet[32];

        public bool Serve(VhostDevice device, int queue)
        {
            int n = VirtioNet.DequeueBurst(device, queue, _pool, _burst);
            if (n == 0) return false;
            VirtioNet.EnqueueBurst(device, queue - 1, _burst.AsSpan(0, n));
            _pool.Free(_burst.AsSpan(0, n));
            return true;
        }

        public void Dispose() => _pool.Dispose();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ControlPlaneChurnUnderForwardingReturnsEveryBufferOnce(bool packed)
    {
        using var group = new PollGroup(1);
        using var echo = new Echo();
        using var be = new TestBackEnd(extraFeatures: NetFeatures.Default);
        be.Ops.NewHook = d =>
        {
            d.Serve(1, echo, QueueMode.Polling, group);
            return true;
        };
        using var fe = be.Connect();
        ulong want = ~(VirtioFeature.Bit(VirtioFeature.LogAll) | VirtioFeature.Bit(VirtioFeature.AccessPlatform) | (packed ? 0 : VirtioFeature.Bit(VirtioFeature.RingPacked)));
        using var setup = DeviceSetup.Run(fe, new DeviceSetupOptions { Packed = packed, QueueSize = 64, MemorySize = 8 << 20, Features = want });
        be.Ops.WaitFor("new");
        var rx = DriverRing.Create(setup[0], setup.Memory);
        var tx = DriverRing.Create(setup[1], setup.Memory);
        if (tx is DriverPackedRing ptx) ptx.InOrder = be.Ops.LastNew!.HasFeature(VirtioFeature.InOrder);
        if (rx is DriverPackedRing prx) prx.InOrder = be.Ops.LastNew!.HasFeature(VirtioFeature.InOrder);
        var errors = new List<Exception>();
        long sent = 0, received = 0;
        using var stopGuest = new CancellationTokenSource();
        var guest = new Thread(() =>
        {
            try
            {
                const int Buffers = 16;
                var txPending = new Dictionary<ushort, ulong>();
                var rxPending = new Dictionary<ushort, ulong>();
                var free = new Stack<ulong>();
                for (int i = 0; i < Buffers; i++)
                {
                    free.Push(setup.Memory.Allocate(12 + 64, 64));
                    ulong r = setup.Memory.Allocate(2048, 64);
                    rxPending.Add(rx.Add(new DriverBuffer(r, 2048, true)), r);
                }
                while (!stopGuest.IsCancellationRequested)
                {
                    while (free.Count > 0)
                    {
                        ulong b = free.Pop();
                        var f = setup.Memory.Span(b, 12 + 64);
                        f.Clear();
                        f[12] = 0x02;
                        Assert.True(txPending.TryAdd(tx.Add(new DriverBuffer(b, 12 + 64, false)), b));
                    }
                    while (tx.TryGetUsed(out var u))
                    {
                        // a buffer returned twice, or one never posted, has no pending entry
                        Assert.True(txPending.Remove(u.Id, out ulong b), $"transmit id {u.Id} was not in flight");
                        free.Push(b);
                        Interlocked.Increment(ref sent);
                    }
                    while (rx.TryGetUsed(out var u))
                    {
                        Assert.True(rxPending.Remove(u.Id, out ulong r), $"receive id {u.Id} was not posted");
                        rxPending.Add(rx.Add(new DriverBuffer(r, 2048, true)), r);
                        Interlocked.Increment(ref received);
                    }
                }
            }
            catch (Exception e)
            {
                lock (errors) errors.Add(e);
            }
        });
        guest.Start();
        var extra = setup.Memory.AddRegion(0x4000_0000, 1 << 20);
        int changes = 0;
        // both sides must get going: until 500 changes ran and 5000 frames went through (bounded by a deadline)
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (guest.IsAlive && (changes < 500 || Interlocked.Read(ref sent) < 5000) && DateTime.UtcNow < deadline)
        {
            int q = changes & 1;
            switch (changes++ % 5)
            {
                case 0:
                    Assert.Equal(0UL, fe.AddMemReg(extra, needReply: true));
                    break;
                case 1:
                    Assert.Equal(0UL, fe.SetVringAddr(setup[q].Address, needReply: true));
                    break;
                case 2:
                    using (var kick = FileDescriptors.Duplicate(setup[q].KickFd!)) Assert.Equal(0UL, fe.SetVringKick((uint)q, kick, needReply: true));
                    break;
                case 3:
                    using (var call = FileDescriptors.Duplicate(setup[q].CallFd!)) Assert.Equal(0UL, fe.SetVringCall((uint)q, call, needReply: true));
                    break;
                default:
                    Assert.Equal(0UL, fe.RemMemReg(extra.Info, needReply: true));
                    break;
            }
        }
        stopGuest.Cancel();
        Assert.True(guest.Join(T), "the guest's traffic stalled");
        Assert.Empty(errors);
        Assert.True(changes >= 500, $"only {changes} control-plane changes ran");
        Assert.True(Interlocked.Read(ref sent) >= 5000, $"only {sent} frames went through during {changes} changes");
        Assert.True(Interlocked.Read(ref received) > 0);
        Assert.Null(be.Ops.LastNew!.FaultReason);
    }
}
