using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using Vhost.Interop;
using Vhost.Rings;

namespace Vhost.Blk;

/// <summary>
/// Checks and executes one virtio-blk request. Pure with respect to the ring: it reads the chain's
/// segments, talks to the storage, writes the status byte and says how many bytes it wrote, so it can
/// run on the queue thread or on an I/O thread. Nothing here allocates.
/// </summary>
internal sealed partial class BlkRequestProcessor
{
    private readonly VirtioBlk _blk;
    private readonly IBlockStorage _storage;
    private readonly ILogger _logger;
    private readonly ulong _capacitySectors;
    private readonly int _latencyMs;

    public BlkRequestProcessor(VirtioBlk blk, ILogger logger)
    {
        _blk = blk;
        _storage = blk.Storage;
        _logger = logger;
        _capacitySectors = (ulong)_storage.Capacity >> BlkWire.SectorShift;
        _latencyMs = blk.SimulatedLatencyMs;
    }

    /// <summary>Runs the request; returns the used length (bytes written into the chain's writable buffers).</summary>
    public uint Process(int queue, in DescriptorChain chain, ReadOnlySpan<BufferSegment> all, BlkQueueStats stats)
    {
        var segs = all.Slice(chain.SegmentStart, chain.SegmentCount);
        if (chain.WritableBytes == 0 || chain.SegmentCount == chain.ReadableSegments)
        {
            // nowhere to put a status: the guest gets its buffers back with nothing written
            Invalid(stats, queue, chain.Id, 0, "no device-writable status byte");
            return 0;
        }
        var statusWindow = segs[^1].Window;
        Span<byte> header = stackalloc byte[BlkWire.HeaderSize];
        var readable = segs[..chain.ReadableSegments];
        var writable = segs[chain.ReadableSegments..];
        if (chain.ReadableBytes < BlkWire.HeaderSize || !BufferSegments.Gather(readable, 0, header))
            return Finish(statusWindow, Invalid(stats, queue, chain.Id, 0, "request header shorter than 16 bytes"), 0);

        var type = (BlkRequestType)BinaryPrimitives.ReadUInt32LittleEndian(header);
        ulong sector = BinaryPrimitives.ReadUInt64LittleEndian(header[8..]);
        if (_latencyMs > 0 && type == BlkRequestType.Out)
            Thread.Sleep(_latencyMs + (int)(sector >> 7) % 3 * _latencyMs / 2);
        long payload = chain.ReadableBytes - BlkWire.HeaderSize;
        long inData = chain.WritableBytes - 1;

        switch (type)
        {
            case BlkRequestType.In:
            {
                if (!CheckRange(stats, queue, chain.Id, sector, inData, out var bad)) return Finish(statusWindow, bad, 0);
                int e = Transfer(writable, 0, inData, (long)(sector << BlkWire.SectorShift), toGuest: true);
                if (e != 0) return Finish(statusWindow, IoError(stats, queue, type, sector, e), 0);
                Interlocked.Increment(ref stats._reads);
                Interlocked.Add(ref stats._readBytes, inData);
                return Finish(statusWindow, BlkStatus.Ok, (uint)inData);
            }
            case BlkRequestType.Out:
            {
                if (_blk.IsReadOnly) return Finish(statusWindow, Invalid(stats, queue, chain.Id, sector, "write to a read-only device"), 0);
                if (!CheckRange(stats, queue, chain.Id, sector, payload, out var bad)) return Finish(statusWindow, bad, 0);
                long offset = (long)(sector << BlkWire.SectorShift);
                int e = Transfer(readable, BlkWire.HeaderSize, payload, offset, toGuest: false);
                if (e == 0 && !_blk.WritebackCache) e = _storage.Flush();
                if (e != 0) return Finish(statusWindow, IoError(stats, queue, type, sector, e), 0);
                Interlocked.Increment(ref stats._writes);
                Interlocked.Add(ref stats._writtenBytes, payload);
                return Finish(statusWindow, BlkStatus.Ok, 0);
            }
            case BlkRequestType.Flush:
            {
                int e = _storage.IsReadOnly ? 0 : _storage.Flush();
                if (e != 0) return Finish(statusWindow, IoError(stats, queue, type, sector, e), 0);
                Interlocked.Increment(ref stats._flushes);
                return Finish(statusWindow, BlkStatus.Ok, 0);
            }
            case BlkRequestType.GetId:
            {
                if (inData < BlkWire.IdBytes)
                    return Finish(statusWindow, Invalid(stats, queue, chain.Id, sector, "GET_ID buffer shorter than 20 bytes"), 0);
                WriteId(writable);
                Interlocked.Increment(ref stats._getIds);
                return Finish(statusWindow, BlkStatus.Ok, BlkWire.IdBytes);
            }
            case BlkRequestType.Discard:
            case BlkRequestType.WriteZeroes:
                return Finish(statusWindow, DiscardOrZero(stats, queue, chain.Id, type, readable, payload), 0);
            default:
                Interlocked.Increment(ref stats._unsupported);
                LogUnsupported(_logger, queue, (uint)type);
                return Finish(statusWindow, BlkStatus.Unsupp, 0);
        }
    }

    private static uint Finish(NativeWindow statusWindow, BlkStatus status, uint dataWritten)
    {
        statusWindow.Span(statusWindow.Length - 1, 1)[0] = (byte)status;
        return dataWritten + 1;
    }

    private bool CheckRange(BlkQueueStats stats, int queue, ushort id, ulong sector, long length, out BlkStatus status)
    {
        status = BlkStatus.Ok;
        if (length % BlkWire.SectorSize != 0)
        {
            status = Invalid(stats, queue, id, sector, "data length not a multiple of 512");
            return false;
        }
        ulong sectors = (ulong)length >> BlkWire.SectorShift;
        if (sector > _capacitySectors || sectors > _capacitySectors - sector)
        {
            status = Invalid(stats, queue, id, sector, "sector range beyond capacity");
            return false;
        }
        return true;
    }

    private BlkStatus DiscardOrZero(BlkQueueStats stats, int queue, ushort id, BlkRequestType type,
        ReadOnlySpan<BufferSegment> readable, long payload)
    {
        bool discard = type == BlkRequestType.Discard;
        if (_blk.IsReadOnly) return Invalid(stats, queue, id, 0, "discard or write-zeroes on a read-only device");
        if (payload == 0 || payload % BlkWire.RangeSize != 0)
            return Invalid(stats, queue, id, 0, "discard/write-zeroes payload not a whole number of 16-byte ranges");
        long count = payload / BlkWire.RangeSize;
        uint maxSeg = discard ? _blk.MaxDiscardSegments : _blk.MaxWriteZeroesSegments;
        uint maxSectors = discard ? _blk.MaxDiscardSectors : _blk.MaxWriteZeroesSectors;
        if (count > maxSeg)
        {
            Interlocked.Increment(ref stats._invalid);
            LogBadRequest(_logger, queue, id, 0, "more discard/write-zeroes segments than advertised");
            return BlkStatus.Unsupp;
        }
        // the guest may rewrite the ranges while we work: copy them once, then check and apply only the copy
        Span<byte> ranges = stackalloc byte[(int)count * BlkWire.RangeSize];
        if (!BufferSegments.Gather(readable, BlkWire.HeaderSize, ranges))
            return Invalid(stats, queue, id, 0, "discard/write-zeroes ranges shorter than the payload");
        // every range is checked before any is applied: a bad request changes nothing
        for (int i = 0; i < ranges.Length; i += BlkWire.RangeSize)
        {
            ulong sector = BinaryPrimitives.ReadUInt64LittleEndian(ranges[i..]);
            uint sectors = BinaryPrimitives.ReadUInt32LittleEndian(ranges[(i + 8)..]);
            uint flags = BinaryPrimitives.ReadUInt32LittleEndian(ranges[(i + 12)..]);
            if ((discard && flags != 0) || (flags & ~BlkWire.RangeFlagUnmap) != 0)
            {
                Interlocked.Increment(ref stats._invalid);
                LogBadRequest(_logger, queue, id, sector, "discard/write-zeroes flags not allowed");
                return BlkStatus.Unsupp;
            }
            if (sectors > maxSectors)
                return Invalid(stats, queue, id, sector, "discard/write-zeroes range above the advertised maximum");
            if (sector > _capacitySectors || sectors > _capacitySectors - sector)
                return Invalid(stats, queue, id, sector, "sector range beyond capacity");
        }
        for (int i = 0; i < ranges.Length; i += BlkWire.RangeSize)
        {
            ulong sector = BinaryPrimitives.ReadUInt64LittleEndian(ranges[i..]);
            uint sectors = BinaryPrimitives.ReadUInt32LittleEndian(ranges[(i + 8)..]);
            uint flags = BinaryPrimitives.ReadUInt32LittleEndian(ranges[(i + 12)..]);
            long offset = (long)(sector << BlkWire.SectorShift), length = (long)sectors << BlkWire.SectorShift;
            int e = discard ? _storage.Discard(offset, length)
                : _storage.WriteZeroes(offset, length, (flags & BlkWire.RangeFlagUnmap) != 0);
            if (e == 0 && !discard && !_blk.WritebackCache) e = _storage.Flush();
            if (e != 0) return IoError(stats, queue, type, sector, e);
        }
        Interlocked.Increment(ref discard ? ref stats._discards : ref stats._writeZeroes);
        return BlkStatus.Ok;
    }

    /// <summary>Moves <paramref name="length"/> bytes between the segments (after <paramref name="skip"/>) and the disk.</summary>
    private int Transfer(ReadOnlySpan<BufferSegment> segs, long skip, long length, long diskOffset, bool toGuest)
    {
        foreach (ref readonly var s in segs)
        {
            if (length == 0) break;
            long segLen = (long)s.Window.Length;
            if (skip >= segLen)
            {
                skip -= segLen;
                continue;
            }
            long take = Math.Min(segLen - skip, length);
            var piece = s.Window.Slice((nuint)skip, (nuint)take);
            int e = toGuest ? _storage.Read(diskOffset, piece) : _storage.Write(diskOffset, piece);
            if (e != 0) return e;
            diskOffset += take;
            length -= take;
            skip = 0;
        }
        return 0;
    }


    private void WriteId(ReadOnlySpan<BufferSegment> writable)
    {
        ReadOnlySpan<byte> id = _blk.IdBytes;
        int done = 0;
        foreach (ref readonly var s in writable)
        {
            int take = (int)Math.Min((long)s.Window.Length, id.Length - done);
            id.Slice(done, take).CopyTo(s.Window.Span(0, take));
            done += take;
            if (done == id.Length) break;
        }
    }

    private BlkStatus Invalid(BlkQueueStats stats, int queue, ushort id, ulong sector, string reason)
    {
        long n = Interlocked.Increment(ref stats._invalid);
        // a hostile guest must not be able to flood the log: the first ones, then one in ten thousand
        if (n <= 100 || n % 10000 == 0) LogBadRequest(_logger, queue, id, sector, reason);
        return BlkStatus.IoErr;
    }

    private BlkStatus IoError(BlkQueueStats stats, int queue, BlkRequestType type, ulong sector, int errno)
    {
        long n = Interlocked.Increment(ref stats._ioErrors);
        if (n <= 100 || n % 10000 == 0) LogIoError(_logger, queue, type, sector, errno);
        return BlkStatus.IoErr;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "blk queue {Queue}: request {Id} (sector {Sector}) refused: {Reason}")]
    private static partial void LogBadRequest(ILogger logger, int queue, ushort id, ulong sector, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "blk queue {Queue}: {Type} at sector {Sector} failed, errno {Errno}")]
    private static partial void LogIoError(ILogger logger, int queue, BlkRequestType type, ulong sector, int errno);

    [LoggerMessage(Level = LogLevel.Information, Message = "blk queue {Queue}: request type {Type} not supported")]
    private static partial void LogUnsupported(ILogger logger, int queue, uint type);
}
