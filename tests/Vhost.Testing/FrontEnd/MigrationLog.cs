using Vhost.Interop;
using Vhost.Protocol;
using Vhost.Rings;

namespace Vhost.Testing.FrontEnd;

/// <summary>
/// The front-end's side of a pre-copy migration's dirty log, as QEMU 7.2 runs it: a memfd bitmap (one bit per
/// 4 KiB guest-physical page, bit p % 64 of little-endian word p / 64) handed over with SET_LOG_BASE, LOG_ALL
/// switched on with SET_FEATURES and every ring's SET_VRING_ADDR sent again with VHOST_VRING_F_LOG
/// (vhost_migration_log), and a thread that clears the log while the device runs, each word with an atomic
/// exchange against 0 as vhost_dev_sync_region does, OR-ing what it read into <see cref="IsSeen"/>'s bitmap.
/// </summary>
internal sealed class MigrationLog : IDisposable
{
    public const int PageShift = 12;
    public const ulong PageSize = 1UL << PageShift;

    private readonly SafeFd _fd;
    private readonly MemoryMapping _map;
    private readonly NativeWindow _bits;
    private readonly ulong[] _seen;
    private readonly object _passLock = new();
    private Thread? _clearer;
    private volatile bool _stop;
    private long _passes;
    private Exception? _clearerFailure;

    /// <summary>
    /// A log for <paramref name="memory"/>: by default as QEMU sizes it, one bit per page up to the highest guest
    /// address, in whole words. <paramref name="size"/> and <paramref name="offset"/> say otherwise (hostile
    /// tests); the fd holds offset + size + <paramref name="extraFdBytes"/> bytes.
    /// </summary>
    public MigrationLog(FrontEndMemory memory, ulong? size = null, ulong offset = 0, ulong extraFdBytes = 0)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ulong end = memory.Regions.Count == 0 ? 0 : memory.Regions.Max(r => r.GuestPhysEnd);
        ulong pages = (end + PageSize - 1) >> PageShift;
        Size = size ?? Math.Max(8, (pages + 63) / 64 * 8);
        Offset = offset;
        ulong fileSize = checked(offset + Size + extraFdBytes);
        _fd = FileDescriptors.CreateMemFd("vhost-test-log", checked((long)fileSize));
        try
        {
            _map = MemoryMapping.Map(_fd, (nuint)fileSize);
        }
        catch
        {
            _fd.Dispose();
            throw;
        }
        FileBytes = _map.Window;
        _bits = _map.Window.Slice((nuint)offset, (nuint)Size);
        _seen = new ulong[Size / 8];
    }

    /// <summary>The bitmap's bytes (the message's mmap_size).</summary>
    public ulong Size { get; }

    /// <summary>Where the bitmap starts in the fd (mmap_offset).</summary>
    public ulong Offset { get; }

    public ulong Words => Size / 8;

    public ulong Pages => Words * 64;

    public SafeFd Fd => _fd;

    /// <summary>The whole fd as this side maps it (bytes outside the bitmap must stay untouched).</summary>
    public NativeWindow FileBytes { get; }

    public LogPayload Payload => new(Size, Offset);

    /// <summary>SET_LOG_BASE with this log; the reply's value (0: a reply without payload).</summary>
    public ulong SetLogBase(TestFrontEnd frontEnd)
    {
        ArgumentNullException.ThrowIfNull(frontEnd);
        return frontEnd.SetLogBase(Payload, _fd) ?? throw new InvalidOperationException("SET_LOG_BASE had no reply");
    }

    /// <summary>SET_VRING_ADDR as QEMU sends it when logging starts: the same addresses, VHOST_VRING_F_LOG, and the used ring's guest address.</summary>
    public static VringAddress WithLog(QueueSetup queue)
    {
        ArgumentNullException.ThrowIfNull(queue);
        return queue.Address with { Flags = queue.Address.Flags | VringAddress.FlagLog, LogGuestAddr = queue.UsedGpa };
    }

    /// <summary>
    /// The start of a migration as vhost_migration_log(true) does it: SET_LOG_BASE, SET_FEATURES with LOG_ALL,
    /// SET_VRING_ADDR with VHOST_VRING_F_LOG for every ring. Every reply must be 0.
    /// </summary>
    public void StartLogging(TestFrontEnd frontEnd, DeviceSetup setup)
    {
        ArgumentNullException.ThrowIfNull(frontEnd);
        ArgumentNullException.ThrowIfNull(setup);
        Check(SetLogBase(frontEnd), "SET_LOG_BASE");
        Check(frontEnd.SetFeatures(setup.AckedFeatures | VirtioFeature.Bit(VirtioFeature.LogAll), needReply: true), "SET_FEATURES");
        foreach (var q in setup.Queues) Check(frontEnd.SetVringAddr(WithLog(q), needReply: true), "SET_VRING_ADDR");
    }

    /// <summary>Starts the thread that clears the log over and over while the device runs.</summary>
    public void StartClearing()
    {
        if (_clearer != null) throw new InvalidOperationException("already clearing");
        _clearer = new Thread(ClearLoop) { IsBackground = true, Name = "migration log clearer" };
        _clearer.Start();
    }

    private void ClearLoop()
    {
        try
        {
            while (!_stop)
            {
                Sync();
                lock (_passLock)
                {
                    _passes++;
                    Monitor.PulseAll(_passLock);
                }
                Thread.Yield();
            }
        }
        catch (Exception e)
        {
            _clearerFailure = e;
            lock (_passLock) Monitor.PulseAll(_passLock);
        }
    }

    /// <summary>
    /// Waits until the clearer has finished a whole pass that began after this call: every bit set before the
    /// call is then in the seen bitmap.
    /// </summary>
    public void WaitPass(TimeSpan timeout)
    {
        if (_clearer == null) throw new InvalidOperationException("not clearing");
        lock (_passLock)
        {
            // the pass under way may have read some words before the call; the one after it reads them all after
            long target = _passes + 2;
            while (_passes < target)
            {
                if (_clearerFailure != null) throw new InvalidOperationException("the log clearer failed", _clearerFailure);
                if (!Monitor.Wait(_passLock, timeout)) throw new TimeoutException("the log clearer made no pass");
            }
        }
    }

    /// <summary>Stops the clearer and merges the log one last time (after the GET_VRING_BASE replies).</summary>
    public void StopClearing()
    {
        _stop = true;
        _clearer?.Join();
        _clearer = null;
        if (_clearerFailure != null) throw new InvalidOperationException("the log clearer failed", _clearerFailure);
        Sync();
    }

    /// <summary>One pass over the log as QEMU's sync makes it; returns how many bits it found set. Not while the clearer runs.</summary>
    public int Sync()
    {
        int found = 0;
        for (ulong i = 0; i < Words; i++)
        {
            ref ulong w = ref _bits.Ref<ulong>((nuint)(i * 8));
            if (Volatile.Read(ref w) == 0) continue;
            ulong v = Interlocked.Exchange(ref w, 0);
            found += System.Numerics.BitOperations.PopCount(v);
            _seen[i] |= v;
        }
        return found;
    }

    /// <summary>Whether a sync has seen page <paramref name="page"/> dirty (after <see cref="WaitPass"/> or <see cref="StopClearing"/>).</summary>
    public bool IsSeen(ulong page) => page < Pages && (_seen[page / 64] & (1UL << (int)(page % 64))) != 0;

    /// <summary>Whether page <paramref name="page"/>'s bit is set in the log right now (not cleared).</summary>
    public bool IsDirtyNow(ulong page) =>
        page < Pages && (Volatile.Read(ref _bits.Ref<ulong>((nuint)(page / 64 * 8))) & (1UL << (int)(page % 64))) != 0;

    /// <summary>Pages seen dirty so far.</summary>
    public IEnumerable<ulong> SeenPages()
    {
        for (ulong p = 0; p < Pages; p++)
            if (IsSeen(p)) yield return p;
    }

    /// <summary>Forgets what was seen (the log itself is not touched).</summary>
    public void ForgetSeen() => Array.Clear(_seen);

    public void Dispose()
    {
        _stop = true;
        _clearer?.Join();
        _map.Dispose();
        _fd.Dispose();
    }

    private static void Check(ulong ack, string what)
    {
        if (ack != 0) throw new InvalidOperationException($"back-end refused {what} with {ack}");
    }

    private static void Check(ulong? ack, string what)
    {
        if (ack is not 0UL) throw new InvalidOperationException($"back-end refused {what} with {ack?.ToString() ?? "no reply"}");
    }
}

/// <summary>A copy of every mapped region of the test guest's memory, compared page by page (4 KiB).</summary>
internal sealed class GuestSnapshot
{
    private readonly (ulong Gpa, byte[] Bytes)[] _regions;

    private GuestSnapshot((ulong, byte[])[] regions) => _regions = regions;

    public static GuestSnapshot Take(FrontEndMemory memory)
    {
        ArgumentNullException.ThrowIfNull(memory);
        var l = new List<(ulong, byte[])>();
        foreach (var r in memory.Regions)
        {
            if (!r.IsMapped) continue;
            if (r.GuestPhysAddr % MigrationLog.PageSize != 0) throw new ArgumentException("regions must start on a page", nameof(memory));
            l.Add((r.GuestPhysAddr, r.Window.AsSpan().ToArray()));
        }
        return new GuestSnapshot([.. l]);
    }

    /// <summary>The guest-physical pages (GPA >> 12) whose bytes differ between this snapshot and <paramref name="later"/>.</summary>
    public List<ulong> ChangedPages(GuestSnapshot later)
    {
        ArgumentNullException.ThrowIfNull(later);
        if (later._regions.Length != _regions.Length) throw new ArgumentException("snapshots of different memory", nameof(later));
        var changed = new List<ulong>();
        for (int i = 0; i < _regions.Length; i++)
        {
            var (gpa, a) = _regions[i];
            var b = later._regions[i].Bytes;
            for (int at = 0; at < a.Length; at += (int)MigrationLog.PageSize)
            {
                int len = Math.Min((int)MigrationLog.PageSize, a.Length - at);
                if (!a.AsSpan(at, len).SequenceEqual(b.AsSpan(at, len))) changed.Add((gpa + (ulong)at) >> MigrationLog.PageShift);
            }
        }
        return changed;
    }
}
