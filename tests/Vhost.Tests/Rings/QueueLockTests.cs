using Vhost.Rings;

namespace Vhost.Tests.Rings;

public sealed class QueueLockTests
{
    [Fact]
    public void TryEnterFailsWhileHeldAndEnterScopeWaitsForExit()
    {
        var l = new QueueLock();
        Assert.True(l.TryEnter());
        Assert.False(l.TryEnter());
        var entered = new ManualResetEventSlim();
        var t = new Thread(() =>
        {
            using (l.EnterScope()) entered.Set();
        });
        t.Start();
        Assert.False(entered.Wait(200));
        l.Exit();
        Assert.True(entered.Wait(5000));
        t.Join();
        Assert.True(l.TryEnter());
        l.Exit();
    }

    [Fact]
    public void IsAValueTypeSoTheLockStatementCannotTakeIt()
    {
        // `lock (q.AccessLock)` must not compile (CS0185): on a class it would take an unrelated monitor
        Assert.True(typeof(QueueLock).IsValueType);
        Assert.True(typeof(Vhost.Rings.Virtqueue).GetProperty(nameof(Vhost.Rings.Virtqueue.AccessLock))!.PropertyType.IsValueType);
    }
}
