using System.Buffers.Binary;
using Vhost.Interop;
using Vhost.Testing.Rings;

namespace Vhost.Blk.Tests;

/// <summary>
/// The front-end changes memory slots, ring addresses and fds in a loop while a guest-side driver runs I/O with requests
/// in flight on the I/O threads: no crash, no exception on any thread, every request completed exactly once, every byte right.
/// </summary>
public sealed class BlkStressTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ControlPlaneChurnUnderIoLosesAndRepeatsNothing(bool packed)
    {
        using var h = new BlkHarness(packed: packed, latency: TimeSpan.FromMilliseconds(1), capacity: 8 << 20);
        const int Slots = 16, Rounds = 1500;
        var errors = new List<Exception>();
        long completed = 0;
        var io = new Thread(() =>
        {
            try
            {
                // each slot owns 8 sectors and alternates a write of a fresh pattern with a read that checks it
                var hdr = new ulong[Slots];
                var data = new ulong[Slots];
                var status = new ulong[Slots];
                var writing = new bool[Slots];
                var round = new int[Slots];
                var pending = new Dictionary<ushort, int>();
                for (int i = 0; i < Slots; i++)
                {
                    hdr[i] = h.Alloc(16);
                    data[i] = h.Alloc(4096);
                    status[i] = h.Alloc(1);
                }
                void Submit(int i)
                {
                    writing[i] = !writing[i];
                    var head = h.Span(hdr[i], 16);
                    BinaryPrimitives.WriteUInt32LittleEndian(head, writing[i] ? 1u : 0u);
                    BinaryPrimitives.WriteUInt64LittleEndian(head[8..], (ulong)i * 8);
                    if (writing[i]) BlkHarness.Pattern(4096, i * 100000 + round[i]).CopyTo(h.Span(data[i], 4096));
                    else h.Span(data[i], 4096).Clear();
                    h.Span(status[i], 1)[0] = 0xff;
                    ushort id = h.Rings[0].Add(new DriverBuffer(hdr[i], 16, false), new DriverBuffer(data[i], 4096, !writing[i]), new DriverBuffer(status[i], 1, true));
                    Assert.True(pending.TryAdd(id, i), $"id {id} reused while in flight");
                }
                for (int i = 0; i < Slots; i++) Submit(i);
                h.Setup[0].Kick();
                while (Interlocked.Read(ref completed) < Rounds * 2)
                {
                    var u = h.Rings[0].WaitUsed(BlkHarness.T);
                    // a request completed twice, or one never submitted, has no pending entry
                    Assert.True(pending.Remove(u.Id, out int i), $"used id {u.Id} was not in flight");
                    Assert.Equal(0, h.Span(status[i], 1)[0]);
                    if (!writing[i]) Assert.Equal(BlkHarness.Pattern(4096, i * 100000 + round[i]), h.Span(data[i], 4096).ToArray());
                    if (!writing[i]) round[i]++;
                    Interlocked.Increment(ref completed);
                    Submit(i);
                    h.Setup[0].Kick();
                }
                // nothing lost: every request still out completes
                while (pending.Count > 0) Assert.True(pending.Remove(h.Rings[0].WaitUsed(BlkHarness.T).Id));
            }
            catch (Exception e)
            {
                lock (errors) errors.Add(e);
            }
        });
        io.Start();
        var extra = h.Memory.AddRegion(0x4000_0000, 1 << 20);
        int changes = 0;
        while (io.IsAlive)
        {
            switch (changes++ % 5)
            {
                case 0:
                    Assert.Equal(0UL, h.Fe.AddMemReg(extra, needReply: true));
                    break;
                case 1:
                    Assert.Equal(0UL, h.Fe.SetVringAddr(h.Setup[0].Address, needReply: true));
                    break;
                case 2:
                    using (var kick = FileDescriptors.Duplicate(h.Setup[0].KickFd!)) Assert.Equal(0UL, h.Fe.SetVringKick(0, kick, needReply: true));
                    break;
                case 3:
                    using (var call = FileDescriptors.Duplicate(h.Setup[0].CallFd!)) Assert.Equal(0UL, h.Fe.SetVringCall(0, call, needReply: true));
                    break;
                default:
                    Assert.Equal(0UL, h.Fe.RemMemReg(extra.Info, needReply: true));
                    break;
            }
        }
        io.Join();
        Assert.Empty(errors);
        Assert.True(changes > 50, $"only {changes} control-plane changes ran during the I/O");
        Assert.Null(h.Device.FaultReason);
        Assert.Equal(0, h.Blk.InFlight);
        h.AssertStillServes();
    }
}
