namespace Vhost.Memory;

/// <summary>VHOST_ACCESS_* of an IOTLB entry or a lookup: what the device may do with the bytes.</summary>
[Flags]
internal enum IotlbAccess : byte
{
    None = 0,
    Read = 1,
    Write = 2,
    ReadWrite = Read | Write,
}

/// <summary>
/// A device's IOTLB under a vIOMMU (VIRTIO_F_ACCESS_PLATFORM): the I/O virtual addresses the guest gave its
/// device, mapped to the front-end's virtual addresses with a permission, as VHOST_USER_IOTLB_MSG updates and
/// invalidates them. Bounded (<see cref="Capacity"/> entries; when full, the oldest entry goes).
/// Concurrency: the device changes it only with every queue's lease held, and the data path reads it only
/// under its queue's lease, so a lookup never sees a change half made and, once a change returns, no burst
/// still uses what it removed. The pending misses are the one part the data path writes; they have their own lock.
/// Ranges are kept as (first, last) so that an entry ending at 2^64 needs no 65-bit arithmetic.
/// </summary>
internal sealed class IoTlb
{
    public const int DefaultCapacity = 2048;
    /// <summary>A page with a miss outstanding is not asked for again within this time.</summary>
    public const long MissRetryMilliseconds = 1000;

    private readonly struct Entry(ulong first, ulong last, ulong uaddr, IotlbAccess perm, long seq)
    {
        public readonly ulong First = first;
        public readonly ulong Last = last;
        public readonly ulong Uaddr = uaddr;
        public readonly IotlbAccess Perm = perm;
        public readonly long Seq = seq;
    }

    // sorted by First, never overlapping
    private Entry[] _entries;
    private int _count;
    private long _seq;
    // page | access → when the first miss was sent, when the last one was
    private readonly Dictionary<ulong, (long First, long Last)> _pending = [];
    private readonly Lock _pendingLock = new();
    private long _missesSent, _updates, _invalidations, _evictions;

    /// <summary>How long a miss may go unanswered before its chain is given up, by default.</summary>
    public const long DefaultMissGiveUpMilliseconds = 5000;

    public IoTlb(int capacity = DefaultCapacity, long missGiveUpMilliseconds = DefaultMissGiveUpMilliseconds)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(missGiveUpMilliseconds);
        Capacity = capacity;
        MissGiveUpMilliseconds = missGiveUpMilliseconds;
        _entries = new Entry[Math.Min(capacity, 64)];
    }

    public int Capacity { get; }

    /// <summary>A chain whose miss has gone unanswered this long is returned to the guest unused and counted.</summary>
    public long MissGiveUpMilliseconds { get; }

    /// <summary>Entries held.</summary>
    public int Count => _count;

    /// <summary>Miss messages asked for (hits and misses are counted per queue, by the ring that looked).</summary>
    public long MissesSent => Interlocked.Read(ref _missesSent);

    public long Updates => Interlocked.Read(ref _updates);

    public long Invalidations => Interlocked.Read(ref _invalidations);

    public long Evictions => Interlocked.Read(ref _evictions);

    /// <summary>Misses waiting for their update.</summary>
    public int PendingMisses
    {
        get
        {
            lock (_pendingLock) return _pending.Count;
        }
    }

    /// <summary>Checks an UPDATE's fields; null when they are acceptable.</summary>
    public static string? ValidateUpdate(ulong iova, ulong size, ulong uaddr, IotlbAccess perm)
    {
        if (size == 0) return "size 0";
        if (iova + (size - 1) < iova) return $"iova 0x{iova:x} + size 0x{size:x} passes 2^64";
        if (uaddr + (size - 1) < uaddr) return $"uaddr 0x{uaddr:x} + size 0x{size:x} passes 2^64";
        if (perm == IotlbAccess.None || (perm & ~IotlbAccess.ReadWrite) != 0) return $"permission {(byte)perm}";
        return null;
    }

    /// <summary>Adds a translation (replacing any it overlaps: the newest word is the front-end's). Checked by the caller.</summary>
    internal void Insert(ulong iova, ulong size, ulong uaddr, IotlbAccess perm)
    {
        ulong last = iova + (size - 1);
        RemoveRange(iova, last);
        if (_count == Capacity) EvictOldest();
        if (_count == _entries.Length) Array.Resize(ref _entries, Math.Min(Capacity, _entries.Length * 2));
        int at = LowerBound(iova);
        Array.Copy(_entries, at, _entries, at + 1, _count - at);
        _entries[at] = new Entry(iova, last, uaddr, perm, ++_seq);
        _count++;
        Interlocked.Increment(ref _updates);
        ClearPending(iova, last);
    }

    /// <summary>Drops every translation that overlaps [iova, iova + size) (a size reaching past 2^64 ends there).</summary>
    internal int Invalidate(ulong iova, ulong size)
    {
        Interlocked.Increment(ref _invalidations);
        if (size == 0) return 0;
        ulong last = iova + (size - 1) < iova ? ulong.MaxValue : iova + (size - 1);
        return RemoveRange(iova, last);
    }

    /// <summary>Every entry goes (a reset, a disconnect, the feature switched off).</summary>
    internal void Clear()
    {
        _count = 0;
        lock (_pendingLock) _pending.Clear();
    }

    /// <summary>Whether [iova, iova + length) overlaps [first, last] (for rings that an invalidation may hit).</summary>
    internal static bool Overlaps(ulong iova, ulong length, ulong first, ulong last)
    {
        if (length == 0) return false;
        ulong end = iova + (length - 1) < iova ? ulong.MaxValue : iova + (length - 1);
        return iova <= last && first <= end;
    }

    /// <summary>
    /// The front-end address of [iova, iova + length) where one entry, or entries following each other in both
    /// address spaces, cover it with <paramref name="need"/>. Returns the bytes covered from iova (length when all
    /// of it); 0 with <paramref name="missAt"/> set when the first uncovered byte has no entry, or an entry lacks the
    /// permission (<paramref name="denied"/>). A length of 0 is looked up as 1.
    /// </summary>
    internal ulong Translate(ulong iova, ulong length, IotlbAccess need, out ulong uaddr, out ulong missAt, out bool denied)
    {
        uaddr = 0;
        missAt = iova;
        denied = false;
        if (length == 0) length = 1;
        int i = Find(iova);
        if (i < 0) return 0;
        ref readonly var e = ref _entries[i];
        if ((e.Perm & need) != need)
        {
            denied = true;
            return 0;
        }
        uaddr = e.Uaddr + (iova - e.First);
        ulong covered = e.Last - iova;  // bytes after the first, so 2^64 never appears
        ulong nextUaddr = e.Uaddr + (e.Last - e.First);
        // following entries that continue the same front-end range make one piece
        while (covered < length - 1 && i + 1 < _count)
        {
            ref readonly var n = ref _entries[i + 1];
            if (n.First != _entries[i].Last + 1 || n.Uaddr != nextUaddr + 1 || (n.Perm & need) != need) break;
            covered += n.Last - n.First + 1;
            nextUaddr = n.Uaddr + (n.Last - n.First);
            i++;
        }
        if (covered >= length - 1) return length;
        missAt = iova + covered + 1;
        return covered + 1;
    }

    /// <summary>
    /// Records a miss for the page of <paramref name="iova"/>; true when a miss message should be sent now (none
    /// outstanding for that page and access, or the last one older than <see cref="MissRetryMilliseconds"/>).
    /// </summary>
    internal bool NoteMiss(ulong iova, IotlbAccess need, long nowMs)
    {
        ulong key = Key(iova, need);
        lock (_pendingLock)
        {
            long first = nowMs;
            if (_pending.TryGetValue(key, out var p))
            {
                if (nowMs - p.Last < MissRetryMilliseconds) return false;
                first = p.First;
            }
            else if (_pending.Count >= Capacity)
            {
                // a flood of distinct misses: forget the oldest requests rather than grow
                _pending.Clear();
            }
            _pending[key] = (first, nowMs);
        }
        Interlocked.Increment(ref _missesSent);
        return true;
    }

    /// <summary>Since when a miss for this page has been outstanding (null: none).</summary>
    internal long? PendingSince(ulong iova, IotlbAccess need)
    {
        lock (_pendingLock) return _pending.TryGetValue(Key(iova, need), out var p) ? p.First : null;
    }

    /// <summary>Stops waiting for a page (its chain was given up).</summary>
    internal void ForgetMiss(ulong iova, IotlbAccess need)
    {
        lock (_pendingLock) _pending.Remove(Key(iova, need));
    }

    private static ulong Key(ulong iova, IotlbAccess need) => (iova & ~0xfffUL) | (byte)need;

    private void ClearPending(ulong first, ulong last)
    {
        lock (_pendingLock)
        {
            if (_pending.Count == 0) return;
            List<ulong>? gone = null;
            foreach (var key in _pending.Keys)
            {
                ulong page = key & ~0xfffUL;
                if (page <= last && first <= (page | 0xfff)) (gone ??= []).Add(key);
            }
            if (gone != null) foreach (var k in gone) _pending.Remove(k);
        }
    }

    /// <summary>The entry holding <paramref name="iova"/>, or -1.</summary>
    private int Find(ulong iova)
    {
        int lo = 0, hi = _count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            ref readonly var e = ref _entries[mid];
            if (iova < e.First) hi = mid - 1;
            else if (iova > e.Last) lo = mid + 1;
            else return mid;
        }
        return -1;
    }

    /// <summary>The first index whose entry starts at or after <paramref name="iova"/>.</summary>
    private int LowerBound(ulong iova)
    {
        int lo = 0, hi = _count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (_entries[mid].First < iova) lo = mid + 1;
            else hi = mid;
        }
        return lo;
    }

    private int RemoveRange(ulong first, ulong last)
    {
        int kept = 0, removed = 0;
        for (int i = 0; i < _count; i++)
        {
            ref readonly var e = ref _entries[i];
            if (e.First <= last && first <= e.Last) removed++;
            else _entries[kept++] = e;
        }
        _count = kept;
        return removed;
    }

    private void EvictOldest()
    {
        int oldest = 0;
        for (int i = 1; i < _count; i++) if (_entries[i].Seq < _entries[oldest].Seq) oldest = i;
        Array.Copy(_entries, oldest + 1, _entries, oldest, _count - oldest - 1);
        _count--;
        Interlocked.Increment(ref _evictions);
    }
}
