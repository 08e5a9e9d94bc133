using Microsoft.Extensions.Logging.Abstractions;
using Vhost.Rings;
using Xunit;

namespace Vhost.Tests.Rings;

public sealed class QueueLocalTests
{
    private sealed class StateA
    {
        public int Made;
    }

    private sealed class StateB;

    [Fact]
    public void EachInstanceHasItsOwnSlotPerQueue()
    {
        var a = new QueueLocal<StateA>();
        var b = new QueueLocal<StateB>();
        var other = new QueueLocal<StateA>();
        var q0 = new Virtqueue(0, NullLogger.Instance);
        var q1 = new Virtqueue(1, NullLogger.Instance);
        Assert.Null(a.Get(q0));
        var s0 = a.GetOrAdd(q0, _ => new StateA());
        var b0 = b.GetOrAdd(q0, _ => new StateB());
        Assert.Same(s0, a.Get(q0));
        Assert.Same(b0, b.Get(q0));
        // another instance of the same type, and another queue, see nothing of it
        Assert.Null(other.Get(q0));
        Assert.Null(a.Get(q1));
        Assert.NotSame(s0, a.GetOrAdd(q1, _ => new StateA()));
    }

    [Fact]
    public void RacingFirstUsesMakeTheStateOnce()
    {
        var local = new QueueLocal<StateA>();
        for (int round = 0; round < 200; round++)
        {
            var q = new Virtqueue(0, NullLogger.Instance);
            int made = 0;
            var seen = new StateA[4];
            using var go = new Barrier(seen.Length);
            var threads = Enumerable.Range(0, seen.Length).Select(i => new Thread(() =>
            {
                go.SignalAndWait();
                seen[i] = local.GetOrAdd(q, _ => new StateA { Made = Interlocked.Increment(ref made) });
            })).ToArray();
            foreach (var t in threads) t.Start();
            foreach (var t in threads) t.Join();
            Assert.Equal(1, made);
            Assert.All(seen, s => Assert.Same(seen[0], s));
        }
    }
}
