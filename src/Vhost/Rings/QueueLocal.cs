namespace Vhost.Rings;

/// <summary>
/// State a device library or an application keeps per queue (Vhost.Net: its scratch arrays and statistics), typed,
/// and one slot per <see cref="QueueLocal{T}"/> instance, so two libraries serving the same queue do not share a
/// field. Reads take no lock (one array load per burst); the first store into a queue takes its lock once.
/// Make one instance per kind of state and keep it (a static field): slots are never reused.
/// </summary>
public sealed class QueueLocal<T> where T : class
{
    private readonly int _slot = Virtqueue.AllocateLocalSlot();

    /// <summary>The value stored for <paramref name="queue"/>, or null.</summary>
    public T? Get(Virtqueue queue) => queue.GetLocal(_slot) as T;

    /// <summary>The value stored for <paramref name="queue"/>, or the one <paramref name="create"/> makes (once per queue, even when threads race).</summary>
    public T GetOrAdd(Virtqueue queue, Func<Virtqueue, T> create)
    {
        ArgumentNullException.ThrowIfNull(queue);
        ArgumentNullException.ThrowIfNull(create);
        if (queue.GetLocal(_slot) is T found) return found;
        return (T)queue.GetOrAddLocal(_slot, static (q, f) => ((Func<Virtqueue, T>)f)(q), create);
    }
}
