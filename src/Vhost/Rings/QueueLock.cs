namespace Vhost.Rings;

/// <summary>
/// The lock between a queue's control plane and its data path. The data path takes it once per burst with
/// <see cref="TryEnter"/>; the control plane waits for it with <see cref="EnterScope"/>. It is a single flag:
/// no owner thread is recorded, because System.Threading.Lock's owner bookkeeping (a thread-local lookup on
/// enter and exit) cost several percent of a 64-byte packet's budget in profiles. Not reentrant.
/// A struct on purpose: the C# <c>lock</c> statement on it is a compile error (CS0185), where on a class it
/// would quietly take an unrelated monitor. Use <c>using (q.AccessLock.EnterScope())</c>.
/// </summary>
internal readonly struct QueueLock
{
    private readonly Flag _flag;

    /// <summary>A new, free lock. (A <c>default</c> QueueLock has no flag and fails on first use.)</summary>
    public QueueLock() => _flag = new Flag();

    public bool TryEnter() => Interlocked.CompareExchange(ref _flag.Held, 1, 0) == 0;

    public void Enter()
    {
        var spin = new SpinWait();
        while (!TryEnter()) spin.SpinOnce();
    }

    public void Exit() => Volatile.Write(ref _flag.Held, 0);

    public Scope EnterScope()
    {
        Enter();
        return new Scope(this);
    }

    public readonly ref struct Scope(QueueLock owner)
    {
        public void Dispose() => owner.Exit();
    }

    private sealed class Flag
    {
        public int Held;
    }
}
