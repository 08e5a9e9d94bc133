namespace Vhost.Blk;

/// <summary>Counters of one queue. Updated with interlocked adds (pool threads complete requests too), read any time.</summary>
public sealed class BlkQueueStats
{
    internal long _reads, _writes, _readBytes, _writtenBytes, _flushes, _discards, _writeZeroes, _getIds;
    internal long _ioErrors, _invalid, _unsupported;
    private long _iotlbHits, _iotlbMisses, _iotlbUpdates, _iotlbInvalidations;

    /// <summary>Read requests (VIRTIO_BLK_T_IN) completed.</summary>
    public long Reads => Interlocked.Read(ref _reads);
    /// <summary>Write requests (VIRTIO_BLK_T_OUT) completed.</summary>
    public long Writes => Interlocked.Read(ref _writes);
    /// <summary>Bytes read by completed read requests.</summary>
    public long ReadBytes => Interlocked.Read(ref _readBytes);
    /// <summary>Bytes written by completed write requests.</summary>
    public long WrittenBytes => Interlocked.Read(ref _writtenBytes);
    /// <summary>FLUSH requests completed.</summary>
    public long Flushes => Interlocked.Read(ref _flushes);
    /// <summary>DISCARD requests completed.</summary>
    public long Discards => Interlocked.Read(ref _discards);
    /// <summary>WRITE_ZEROES requests completed.</summary>
    public long WriteZeroes => Interlocked.Read(ref _writeZeroes);
    /// <summary>GET_ID requests answered.</summary>
    public long GetIds => Interlocked.Read(ref _getIds);
    /// <summary>Requests the storage failed.</summary>
    public long IoErrors => Interlocked.Read(ref _ioErrors);
    /// <summary>Requests refused because the front-end broke a rule (range, length, status byte, ...).</summary>
    public long Invalid => Interlocked.Read(ref _invalid);
    /// <summary>Requests of a type the device does not serve (answered VIRTIO_BLK_S_UNSUPP).</summary>
    public long Unsupported => Interlocked.Read(ref _unsupported);

    /// <summary>IOTLB lookups of the queue's descriptors that found their entry (vIOMMU only).</summary>
    public long IotlbHits => Interlocked.Read(ref _iotlbHits);
    /// <summary>IOTLB lookups that found none and asked the front-end.</summary>
    public long IotlbMisses => Interlocked.Read(ref _iotlbMisses);
    /// <summary>IOTLB updates applied to the device (counted on its queue 0, one IOTLB serving every queue).</summary>
    public long IotlbUpdates => Interlocked.Read(ref _iotlbUpdates);
    /// <summary>IOTLB invalidations applied to the device (counted on its queue 0).</summary>
    public long IotlbInvalidations => Interlocked.Read(ref _iotlbInvalidations);

    /// <summary>Takes the IOTLB figures the queue and its device keep themselves.</summary>
    internal void NoteIotlb(Vhost.Device.VhostDevice device, int queue)
    {
        var q = device.Queue(queue);
        Interlocked.Exchange(ref _iotlbHits, q.IotlbHits);
        Interlocked.Exchange(ref _iotlbMisses, q.IotlbMisses);
        if (queue != 0 || device.Iotlb is not { } tlb) return;
        Interlocked.Exchange(ref _iotlbUpdates, tlb.Updates);
        Interlocked.Exchange(ref _iotlbInvalidations, tlb.Invalidations);
    }

    /// <summary>Every request answered.</summary>
    public long Requests => Reads + Writes + Flushes + Discards + WriteZeroes + GetIds + Invalid + Unsupported;

    /// <summary>Adds another set of counters to these (totals over queues or devices).</summary>
    public void Add(BlkQueueStats other)
    {
        _reads += other.Reads; _writes += other.Writes; _readBytes += other.ReadBytes; _writtenBytes += other.WrittenBytes;
        _flushes += other.Flushes; _discards += other.Discards; _writeZeroes += other.WriteZeroes; _getIds += other.GetIds;
        _ioErrors += other.IoErrors; _invalid += other.Invalid; _unsupported += other.Unsupported;
        _iotlbHits += other.IotlbHits; _iotlbMisses += other.IotlbMisses;
        _iotlbUpdates += other.IotlbUpdates; _iotlbInvalidations += other.IotlbInvalidations;
    }
}
