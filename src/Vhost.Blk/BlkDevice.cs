using System.Buffers.Binary;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;
using Vhost.Device;
using Vhost.Interop;
using Vhost.Protocol;
using Vhost.Rings;

namespace Vhost.Blk;

public static class BlkFeature
{
    public const int SizeMax = 1, SegMax = 2, Geometry = 4, Ro = 5, BlkSize = 6, Flush = 9, Topology = 10,
        ConfigWce = 11, Mq = 12, Discard = 13, WriteZeroes = 14;
}

public static class BlkRequest
{
    public const uint In = 0, Out = 1, Flush = 4, GetId = 8, Discard = 11, WriteZeroes = 13;
    public const byte StatusOk = 0, StatusIoErr = 1, StatusUnsupp = 2;
    public const int IdBytes = 20;
}

/// <summary>Counters the CLI shows live; updated with Interlocked by the queue workers. Also published as
/// observable instruments of the "Vhost.Blk" meter, read only when a listener collects, so the data path
/// pays nothing for them.</summary>
public sealed class BlkStats : IDisposable
{
    public long Requests, BytesRead, BytesWritten, Errors;

    // one meter per device, disposed with it, so a finished device's instruments go away
    private readonly Meter _meter = new("Vhost.Blk");

    public BlkStats()
    {
        _meter.CreateObservableCounter("vhost.blk.requests", () => Interlocked.Read(ref Requests), "{request}");
        _meter.CreateObservableCounter("vhost.blk.read", () => Interlocked.Read(ref BytesRead), "By");
        _meter.CreateObservableCounter("vhost.blk.written", () => Interlocked.Read(ref BytesWritten), "By");
        _meter.CreateObservableCounter("vhost.blk.errors", () => Interlocked.Read(ref Errors), "{request}");
    }

    public void Dispose() => _meter.Dispose();
}

/// <summary>
/// A virtio-blk device over an <see cref="IBlockStorage"/>: device ops (one worker per queue), config space,
/// and the request decoder. Every request from the guest is checked before it touches storage; a bad request
/// gets IOERR/UNSUPP and a log line, and the queue keeps serving.
/// </summary>
public sealed class BlkDevice : VhostDeviceOps, IDeviceConfigSpace, IDisposable
{
    public const int SegMax = 126;
    public const int SizeMax = 1 << 20;
    public const int MaxDiscardSegments = 16;
    public const uint MaxDiscardSectors = 1u << 22;
    private const int Burst = 32;

    private readonly IBlockStorage _storage;
    private readonly ILogger _logger;
    private readonly string _serial;
    private readonly Dictionary<VhostDevice, List<Worker>> _workers = [];
    private volatile byte _writeback = 1;

    public BlkDevice(IBlockStorage storage, int queues, ILogger logger, string serial = "vhost-dotnet")
    {
        _storage = storage;
        _logger = logger;
        _serial = serial;
        Queues = queues;
    }

    public int Queues { get; }

    /// <summary>False: NewDevice starts no workers and the caller drives <see cref="ProcessBurst"/> itself
    /// (tests that measure the data path on their own thread).</summary>
    public bool StartWorkers { get; init; } = true;
    public BlkStats Stats { get; } = new();
    public IBlockStorage Storage => _storage;

    public ulong Features =>
        VhostSocketOptions.DefaultFeatures | Bit(BlkFeature.SizeMax) | Bit(BlkFeature.SegMax) | Bit(BlkFeature.BlkSize) |
        Bit(BlkFeature.Flush) | Bit(BlkFeature.Topology) | Bit(BlkFeature.ConfigWce) | Bit(BlkFeature.Mq) |
        Bit(BlkFeature.Discard) | Bit(BlkFeature.WriteZeroes) | (_storage.ReadOnly ? Bit(BlkFeature.Ro) : 0);

    // INFLIGHT_SHMFD is not offered: in-flight tracking is not implemented yet, and offering it would promise
    // QEMU a resubmission we cannot make.
    public static ulong ProtocolFeatures => VhostSocketOptions.DefaultProtocolFeatures | (1UL << (int)ProtocolFeature.Config);

    private static ulong Bit(int b) => 1UL << b;

    /// <summary>Options for a socket serving this device.</summary>
    public VhostSocketOptions Options(string path, bool client, ILoggerFactory? loggers) => new()
    {
        Path = path, Client = client, Features = Features, ProtocolFeatures = ProtocolFeatures,
        MaxQueues = Queues, QueueNumReply = Queues, Ops = this, ConfigSpace = this, LoggerFactory = loggers,
    };

    // ---- config space (struct virtio_blk_config, little endian) ----
    public const int ConfigSize = 60;

    public void FillConfig(Span<byte> c)
    {
        c.Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(c[0..], (ulong)(_storage.CapacityBytes / 512));
        BinaryPrimitives.WriteUInt32LittleEndian(c[8..], SizeMax);
        BinaryPrimitives.WriteUInt32LittleEndian(c[12..], SegMax);
        // geometry (16..19) left zero: the feature is not offered
        BinaryPrimitives.WriteUInt32LittleEndian(c[20..], 512);
        c[24] = 0; c[25] = 0; // physical_block_exp, alignment_offset
        BinaryPrimitives.WriteUInt16LittleEndian(c[26..], 1); // min_io_size in blocks
        BinaryPrimitives.WriteUInt32LittleEndian(c[28..], 0);
        c[32] = _writeback;
        BinaryPrimitives.WriteUInt16LittleEndian(c[34..], (ushort)Queues);
        BinaryPrimitives.WriteUInt32LittleEndian(c[36..], MaxDiscardSectors);
        BinaryPrimitives.WriteUInt32LittleEndian(c[40..], MaxDiscardSegments);
        BinaryPrimitives.WriteUInt32LittleEndian(c[44..], 1);
        BinaryPrimitives.WriteUInt32LittleEndian(c[48..], MaxDiscardSectors);
        BinaryPrimitives.WriteUInt32LittleEndian(c[52..], MaxDiscardSegments);
        c[56] = 1;
    }

    public bool Read(VhostDevice device, uint offset, Span<byte> destination)
    {
        Span<byte> c = stackalloc byte[ConfigSize];
        FillConfig(c);
        destination.Clear();
        if (offset < ConfigSize) c[(int)offset..][..Math.Min(destination.Length, ConfigSize - (int)offset)].CopyTo(destination);
        return true;
    }

    public bool Write(VhostDevice device, uint offset, ReadOnlySpan<byte> data, uint flags)
    {
        // Only the writeback byte is guest-writable (CONFIG_WCE); anything else is refused.
        if (offset == 32 && data.Length == 1 && data[0] <= 1)
        {
            _writeback = data[0];
            _logger.LogInformation("{Device}: write cache {Mode}", device, data[0] == 1 ? "writeback" : "writethrough");
            return true;
        }
        _logger.LogWarning("{Device}: SET_CONFIG offset {Offset} length {Length} refused", device, offset, data.Length);
        return false;
    }

    // ---- lifecycle ----
    public override bool NewDevice(VhostDevice device)
    {
        var list = new List<Worker>();
        for (int i = 0; i < device.Queues.Count; i++)
        {
            var q = device.Queue(i);
            if (!q.IsConfigured || !StartWorkers) continue;
            var w = new Worker(this, q);
            list.Add(w);
            w.Start();
        }
        lock (_workers) _workers[device] = list;
        _logger.LogInformation("{Device}: serving {Count} queue(s)", device, list.Count);
        return true;
    }

    public override void DestroyDevice(VhostDevice device)
    {
        List<Worker>? list;
        lock (_workers) _workers.Remove(device, out list);
        if (list == null) return;
        foreach (var w in list) w.Stop();
    }

    public void Dispose()
    {
        List<Worker>[] all;
        lock (_workers) { all = [.. _workers.Values]; _workers.Clear(); }
        foreach (var l in all) foreach (var w in l) w.Stop();
        Stats.Dispose();
    }

    private sealed class Worker(BlkDevice owner, Virtqueue queue)
    {
        private readonly DescriptorChain[] _chains = new DescriptorChain[Burst];
        private readonly BufferSegment[] _segments = new BufferSegment[Burst * (SegMax + 2)];
        private volatile bool _stop;
        private Thread? _t;

        public void Start()
        {
            _t = new Thread(Run) { IsBackground = true, Name = $"blk-q{queue.Index}" };
            _t.Start();
        }

        public void Stop()
        {
            _stop = true;
            if (_t != null && _t != Thread.CurrentThread) _t.Join(2000);
        }

        private void Run()
        {
            try
            {
                while (!_stop)
                {
                    var kick = queue.KickFd;
                    if (kick != null)
                    {
                        if (Poll.WaitReadable(kick, 100)) EventFd.Consume(kick);
                    }
                    else Thread.Sleep(1);
                    while (!_stop && owner.ProcessBurst(queue, _chains, _segments) > 0) { }
                }
            }
            catch (Exception e) when (e is ObjectDisposedException or InvalidOperationException)
            {
                owner._logger.LogDebug("queue {Queue} worker ended: {Message}", queue.Index, e.Message);
            }
        }
    }

    /// <summary>Pops one burst, serves every request, publishes used entries once. Returns requests served.
    /// One lock TryEnter per burst; no allocation.</summary>
    public int ProcessBurst(Virtqueue q, Span<DescriptorChain> chains, Span<BufferSegment> segments)
    {
        if (!q.AccessLock.TryEnter()) return 0;
        try
        {
            if (!q.IsReady) return 0;
            int n = q.Pop(chains, segments);
            for (int i = 0; i < n; i++)
            {
                ref readonly var ch = ref chains[i];
                uint written = Serve(q.Index, ch, segments.Slice(ch.SegmentStart, ch.SegmentCount));
                q.PushUsed(ch, written);
            }
            if (n > 0) q.FlushUsed();
            return n;
        }
        finally { q.AccessLock.Exit(); }
    }

    /// <summary>Decodes and serves one chain; returns the bytes written to the guest (data + status).</summary>
    public uint Serve(int queue, in DescriptorChain ch, Span<BufferSegment> segs)
    {
        Interlocked.Increment(ref Stats.Requests);
        int readable = ch.ReadableSegments;
        // status byte: last byte of the last segment, which must be writable
        if (segs.Length == 0 || !segs[^1].IsWritable || segs[^1].Length == 0)
        {
            Interlocked.Increment(ref Stats.Errors);
            _logger.LogWarning("blk q{Queue} req {Id}: no writable status byte; request dropped", queue, ch.Id);
            return 0;
        }
        var last = segs[^1].Window;
        ref byte status = ref last.Ref<byte>(last.Length - 1);

        Span<byte> hdr = stackalloc byte[16];
        if (ch.ReadableBytes < 16 || Gather(segs[..readable], 0, hdr) != 16)
            return Fail(ref status, queue, ch.Id, BlkRequest.StatusIoErr, "header shorter than 16 bytes");
        uint type = BinaryPrimitives.ReadUInt32LittleEndian(hdr);
        ulong sector = BinaryPrimitives.ReadUInt64LittleEndian(hdr[8..]);
        var writable = segs[readable..];
        long inData = (long)ch.WritableBytes - 1; // bytes before the status byte
        long outData = ch.ReadableBytes - 16;

        try
        {
            switch (type)
            {
                case BlkRequest.In:
                {
                    if (!CheckRange(sector, inData, out var why)) return Fail(ref status, queue, ch.Id, BlkRequest.StatusIoErr, why);
                    long off = (long)sector * 512, left = inData;
                    foreach (ref var s in writable)
                    {
                        if (left == 0) break;
                        int n = (int)Math.Min(s.Length, left);
                        _storage.Read(s.Window.Span(0, n), off);
                        off += n; left -= n;
                    }
                    Interlocked.Add(ref Stats.BytesRead, inData);
                    status = BlkRequest.StatusOk;
                    return (uint)inData + 1;
                }
                case BlkRequest.Out:
                {
                    if (_storage.ReadOnly) return Fail(ref status, queue, ch.Id, BlkRequest.StatusIoErr, "write on a read-only device");
                    if (!CheckRange(sector, outData, out var why)) return Fail(ref status, queue, ch.Id, BlkRequest.StatusIoErr, why);
                    long off = (long)sector * 512;
                    long skip = 16;
                    foreach (ref var s in segs[..readable])
                    {
                        if (skip >= s.Length) { skip -= s.Length; continue; }
                        var span = s.Window.Span((nuint)skip, s.Length - (int)skip);
                        skip = 0;
                        _storage.Write(span, off);
                        off += span.Length;
                    }
                    if (_writeback == 0) _storage.Flush(); // writethrough: every write is durable on completion
                    Interlocked.Add(ref Stats.BytesWritten, outData);
                    status = BlkRequest.StatusOk;
                    return 1;
                }
                case BlkRequest.Flush:
                    _storage.Flush();
                    status = BlkRequest.StatusOk;
                    return 1;
                case BlkRequest.GetId:
                {
                    if (inData < BlkRequest.IdBytes) return Fail(ref status, queue, ch.Id, BlkRequest.StatusIoErr, "GET_ID buffer smaller than 20 bytes");
                    Span<byte> id = stackalloc byte[BlkRequest.IdBytes];
                    id.Clear();
                    for (int i = 0; i < _serial.Length && i < id.Length; i++) id[i] = (byte)_serial[i];
                    Scatter(writable, id);
                    status = BlkRequest.StatusOk;
                    return BlkRequest.IdBytes + 1;
                }
                case BlkRequest.Discard:
                case BlkRequest.WriteZeroes:
                {
                    if (_storage.ReadOnly) return Fail(ref status, queue, ch.Id, BlkRequest.StatusIoErr, "discard/write-zeroes on a read-only device");
                    if (outData <= 0 || outData % 16 != 0) return Fail(ref status, queue, ch.Id, BlkRequest.StatusIoErr, "discard segment list not a multiple of 16 bytes");
                    if (outData / 16 > MaxDiscardSegments) return Fail(ref status, queue, ch.Id, BlkRequest.StatusIoErr, "too many discard/write-zeroes segments");
                    Span<byte> seg = stackalloc byte[16];
                    // validate every segment before touching storage, so a bad list changes nothing
                    for (int k = 0; k < outData / 16; k++)
                    {
                        Gather(segs[..readable], 16 + k * 16, seg);
                        ulong sec = BinaryPrimitives.ReadUInt64LittleEndian(seg);
                        uint num = BinaryPrimitives.ReadUInt32LittleEndian(seg[8..]);
                        uint flags = BinaryPrimitives.ReadUInt32LittleEndian(seg[12..]);
                        if (num > MaxDiscardSectors)
                            return Fail(ref status, queue, ch.Id, BlkRequest.StatusIoErr, "segment larger than max_discard_sectors");
                        if (!CheckRange(sec, (long)num * 512, out var why))
                            return Fail(ref status, queue, ch.Id, BlkRequest.StatusIoErr, why);
                        if (type == BlkRequest.Discard && flags != 0) return Fail(ref status, queue, ch.Id, BlkRequest.StatusUnsupp, "discard with flags");
                        if ((flags & ~1u) != 0) return Fail(ref status, queue, ch.Id, BlkRequest.StatusUnsupp, "unknown write-zeroes flags");
                    }
                    for (int k = 0; k < outData / 16; k++)
                    {
                        Gather(segs[..readable], 16 + k * 16, seg);
                        ulong sec = BinaryPrimitives.ReadUInt64LittleEndian(seg);
                        uint num = BinaryPrimitives.ReadUInt32LittleEndian(seg[8..]);
                        // discard is advisory; zeroing is always a correct way to honour it (and write-zeroes must zero)
                        _storage.WriteZeroes((long)sec * 512, (long)num * 512);
                    }
                    status = BlkRequest.StatusOk;
                    return 1;
                }
                default:
                    return Fail(ref status, queue, ch.Id, BlkRequest.StatusUnsupp, "unsupported request type");
            }
        }
        catch (Exception e) when (e is IOException or NativeException or UnauthorizedAccessException)
        {
            return Fail(ref status, queue, ch.Id, BlkRequest.StatusIoErr, e.Message);
        }
    }

    private bool CheckRange(ulong sector, long length, out string why)
    {
        why = "";
        if (length < 0) { why = "no data"; return false; }
        if (length % 512 != 0) { why = "data length not a multiple of 512"; return false; }
        ulong cap = (ulong)(_storage.CapacityBytes / 512);
        if (sector > cap || (ulong)(length / 512) > cap - sector) { why = "sector range beyond capacity"; return false; }
        return true;
    }

    private uint Fail(ref byte status, int queue, ushort id, byte code, string why)
    {
        Interlocked.Increment(ref Stats.Errors);
        _logger.LogWarning("blk q{Queue} req {Id}: {Reason}", queue, id, why);
        status = code;
        return 1;
    }

    private static int Gather(Span<BufferSegment> segs, long skip, Span<byte> dest)
    {
        int got = 0;
        foreach (ref var s in segs)
        {
            if (got == dest.Length) break;
            if (skip >= s.Length) { skip -= s.Length; continue; }
            int n = (int)Math.Min(s.Length - skip, dest.Length - got);
            s.Window.Span((nuint)skip, n).CopyTo(dest[got..]);
            got += n;
            skip = 0;
        }
        return got;
    }

    private static void Scatter(Span<BufferSegment> segs, ReadOnlySpan<byte> src)
    {
        foreach (ref var s in segs)
        {
            if (src.IsEmpty) break;
            int n = Math.Min(s.Length, src.Length);
            src[..n].CopyTo(s.Window.Span(0, n));
            src = src[n..];
        }
    }
}
