namespace Vhost.Rings;

/// <summary>
/// The lock between a queue's control plane and its data path. The data path takes it once per burst with
/// <see cref="TryEnter"/>; the control plane waits for it with <see cref="EnterScope"/>. It is a single flag:
/// no owner thread is recorded, because System.Threading.Lock's owner bookkeeping (a thread-local lookup on
/// enter and exit) cost several percent of a 64-byte packet's budget in profiles. Not reentrant.
/// Use <c>using (q.AccessLock.EnterScope())</c>, never the C# <c>lock</c> statement (that would take an
/// unrelated monitor).
/// </summary>
public sealed class QueueLock
{
    private int _held;

    public bool TryEnter() => Interlocked.CompareExchange(ref _held, 1, 0) == 0;

    public void Enter()
    {
        var spin = new SpinWait();
        while (!TryEnter()) spin.SpinOnce();
    }

    public void Exit() => Volatile.Write(ref _held, 0);

    public Scope EnterScope()
    {
        Enter();
        return new Scope(this);
    }

    public readonly ref struct Scope(QueueLock owner)
    {
        public void Dispose() => owner.Exit();
    }
}
