using Microsoft.Extensions.Logging;
using Vhost.Interop;
using Vhost.Memory;
using Vhost.Protocol;

namespace Vhost.Device;

/// <summary>
/// Dirty logging for live migration: SET_LOG_BASE maps the front-end's log, VHOST_F_LOG_ALL switches logging on
/// and off under a running data path (each queue gets the log with its lease quiesced), and applications that write
/// guest memory themselves mark it with <see cref="LogWrite"/> (rte_vhost_log_write).
/// </summary>
public sealed partial class VhostDevice
{
    private DirtyLog? _dirtyLog;
    private long _logPastEndBefore;

    /// <summary>The log SET_LOG_BASE gave, or null.</summary>
    internal DirtyLog? DirtyLog => Volatile.Read(ref _dirtyLog);

    /// <summary>Whether writes into guest memory are being logged (VHOST_F_LOG_ALL negotiated and a log given).</summary>
    public bool IsLogging => HasFeature(VirtioFeature.LogAll) && DirtyLog != null;

    /// <summary>Writes that fell past the end of a log (never made), over this connection's logs.</summary>
    public long DirtyLogWritesPastEnd => Interlocked.Read(ref _logPastEndBefore) + (DirtyLog?.WritesPastEnd ?? 0);

    private Outcome SetLogBase(ReadOnlySpan<byte> p, List<SafeFd?> fds)
    {
        if (!HasProtocolFeature(ProtocolFeature.LogShmfd)) return Outcome.Fail("SET_LOG_BASE without VHOST_USER_PROTOCOL_F_LOG_SHMFD");
        ulong size = Payload.ReadU64(p), offset = Payload.ReadU64(p[8..]);
        using var fd = Take(fds, 0);
        var log = DirtyLog.TryMap(fd, size, offset, out var error, _logger);
        if (log == null) return Outcome.Fail($"SET_LOG_BASE of {size} bytes at offset {offset}: {error}");
        log.Faulted = () => Fault("the dirty log's fd shrank under its mapping; pages marked there are lost");
        // a resize, a restart or a duplicate: the queues move to the new log quiesced, and the old one is unmapped
        // only after that (and after any application writer holding it)
        var old = _dirtyLog;
        Volatile.Write(ref _dirtyLog, log);
        PublishLog();
        RetireLog(old, waitForWriters: true);
        ulong memoryEnd = Memory.Regions.Count == 0 ? 0 : Memory.Regions.Max(r => r.Info.GuestPhysEnd);
        if (memoryEnd > log.Pages << DirtyLog.PageShift)
            _logger.LogWarning("device {Id}: the dirty log covers {Covered} bytes of guest memory but the memory table reaches 0x{End:x}: writes beyond it are not logged (counted)",
                Id, log.Pages << DirtyLog.PageShift, memoryEnd);
        _logger.LogInformation("device {Id}: dirty log of {Size} bytes ({Pages} pages){Again}{Active}", Id, size, log.Pages,
            old != null ? ", replacing the last one" : "", IsLogging ? "; logging" : "");
        // QEMU waits for a reply of size 0 (the connection sends it: SET_LOG_BASE always has one)
        return Outcome.Ok;
    }

    /// <summary>Gives every queue the log it must mark now (none unless LOG_ALL is on).</summary>
    private void PublishLog()
    {
        var active = HasFeature(VirtioFeature.LogAll) ? _dirtyLog : null;
        foreach (var q in _queues)
        {
            using (q.AccessLock.EnterScope()) q.SetDirtyLog(active);
        }
    }

    private void RetireLog(DirtyLog? old, bool waitForWriters = false)
    {
        if (old == null) return;
        old.Release();
        if (waitForWriters)
        {
            // an application's LogWrite that took the old log before the switch may still be marking it; QEMU reads
            // the old log once more after our reply and then drops it, so a bit set there later would be lost: the
            // reply waits until those writers (a few atomic ORs each) have let go
            var spin = new SpinWait();
            while (!old.IsUnmapped) spin.SpinOnce();
        }
        Interlocked.Add(ref _logPastEndBefore, old.WritesPastEnd);
    }

    /// <summary>SET_FEATURES changed VHOST_F_LOG_ALL (or came for the first time).</summary>
    private void LogAllChanged(bool on)
    {
        PublishLog();
        if (on && _dirtyLog == null)
        {
            // QEMU sends the features before the log base when a device starts during a migration; a running device
            // switching logging on without a log is a front-end error
            if (_running) _logger.LogWarning("device {Id}: VHOST_F_LOG_ALL set but no SET_LOG_BASE came first: nothing is logged until one does", Id);
            else _logger.LogDebug("device {Id}: VHOST_F_LOG_ALL before SET_LOG_BASE", Id);
        }
        else
        {
            _logger.LogInformation("device {Id}: dirty logging {State}", Id, on ? "on" : "off");
        }
    }

    /// <summary>The connection's log goes (disconnect, reset).</summary>
    private void DropLog()
    {
        var old = _dirtyLog;
        if (old == null) return;
        Volatile.Write(ref _dirtyLog, null);
        PublishLog();
        RetireLog(old);
    }

    /// <summary>
    /// rte_vhost_log_write: marks guest-physical [<paramref name="guestAddress"/>, +<paramref name="length"/>) dirty
    /// when the front-end is logging for a migration. For applications that write guest memory outside the
    /// library's ring calls; call it after the write. Any thread; writes past the log's end are counted, not made.
    /// </summary>
    public void LogWrite(ulong guestAddress, ulong length)
    {
        if (length == 0 || !HasFeature(VirtioFeature.LogAll)) return;
        while (Volatile.Read(ref _dirtyLog) is { } log)
        {
            if (log.TryAcquire())
            {
                try
                {
                    log.LogRange(guestAddress, length);
                }
                finally
                {
                    log.Release();
                }
                return;
            }
            // replaced and unmapped while we looked: the new one is the one to mark
            if (Volatile.Read(ref _dirtyLog) == log) return;
        }
    }

    /// <summary>
    /// rte_vhost_log_used_vring: marks bytes [<paramref name="offset"/>, +<paramref name="length"/>) of queue
    /// <paramref name="queueId"/>'s used ring (split) or device event area (packed) dirty, for applications that
    /// write it themselves. False for an unknown queue or one whose rings are not set up.
    /// </summary>
    public bool LogUsedRing(int queueId, ulong offset, ulong length)
    {
        if ((uint)queueId >= (uint)_queues.Length) return false;
        var q = _queues[queueId];
        if (q.UsedRingGuestAddress is not { } used || offset > ulong.MaxValue - used) return false;
        LogWrite(used + offset, length);
        return true;
    }
}
