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
}
