namespace Vhost.Blk;

/// <summary>Counters of one queue. Updated with interlocked adds (pool threads complete requests too), read any time.</summary>
public sealed class BlkQueueStats
{
    internal long _reads, _writes, _readBytes, _writtenBytes, _flushes, _discards, _writeZeroes, _getIds;
    internal long _ioErrors, _invalid, _unsupported;

    public long Reads => Interlocked.Read(ref _reads);
    public long Writes => Interlocked.Read(ref _writes);
    public long ReadBytes => Interlocked.Read(ref _readBytes);
    public long WrittenBytes => Interlocked.Read(ref _writtenBytes);
    public long Flushes => Interlocked.Read(ref _flushes);
    public long Discards => Interlocked.Read(ref _discards);
    public long WriteZeroes => Interlocked.Read(ref _writeZeroes);
    public long GetIds => Interlocked.Read(ref _getIds);
    /// <summary>Requests the storage failed.</summary>
    public long IoErrors => Interlocked.Read(ref _ioErrors);
    /// <summary>Requests refused because the front-end broke a rule (range, length, status byte, ...).</summary>
    public long Invalid => Interlocked.Read(ref _invalid);
    public long Unsupported => Interlocked.Read(ref _unsupported);

    /// <summary>Every request answered.</summary>
    public long Requests => Reads + Writes + Flushes + Discards + WriteZeroes + GetIds + Invalid + Unsupported;

    /// <summary>Adds another set of counters to these (totals over queues or devices).</summary>
    public void Add(BlkQueueStats other)
    {
        _reads += other.Reads; _writes += other.Writes; _readBytes += other.ReadBytes; _writtenBytes += other.WrittenBytes;
        _flushes += other.Flushes; _discards += other.Discards; _writeZeroes += other.WriteZeroes; _getIds += other.GetIds;
        _ioErrors += other.IoErrors; _invalid += other.Invalid; _unsupported += other.Unsupported;
    }
}
