namespace Vhost.Memory;

/// <summary>
/// A reference count that starts at one (the publisher's) and can never be taken again once it has fallen to zero:
/// what keeps a memory generation or a dirty log mapped while anyone still uses it. A mutable struct: keep it in a
/// field and call it there.
/// </summary>
internal struct RefCount()
{
    private int _refs = 1;

    /// <summary>References held now (0 once released by all).</summary>
    public int Count => Volatile.Read(ref _refs);

    /// <summary>Takes a reference unless the count already fell to zero.</summary>
    public bool TryAcquire()
    {
        int r = Volatile.Read(ref _refs);
        while (r > 0)
        {
            int seen = Interlocked.CompareExchange(ref _refs, r + 1, r);
            if (seen == r) return true;
            r = seen;
        }
        return false;
    }

    /// <summary>Drops a reference; true when it was the last one (the owner frees what it guards).</summary>
    public bool Release(string what)
    {
        int r = Interlocked.Decrement(ref _refs);
        if (r < 0) throw new InvalidOperationException($"{what} released more often than acquired");
        return r == 0;
    }
}
