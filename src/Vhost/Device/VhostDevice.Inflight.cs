using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using Vhost.Interop;
using Vhost.Protocol;
using Vhost.Rings;

namespace Vhost.Device;

/// <summary>
/// GET_INFLIGHT_FD / SET_INFLIGHT_FD: a memfd shared with the front-end in which the queues record the
/// requests they popped and have not completed. The front-end keeps the fd across a back-end crash and
/// hands it to the next back-end, whose queues resubmit what was in flight.
/// </summary>
public sealed partial class VhostDevice
{
    /// <summary>Bound on the area and its offset: far above any real need (a ring of 32768 entries takes 1 MiB).</summary>
    private const ulong MaxInflightArea = 1UL << 32;

    private MemoryMapping? _inflightMap;
    private SafeFd? _inflightFd;

    /// <summary>The in-flight area the front-end gave (SET_INFLIGHT_FD), if any.</summary>
    public bool HasInflightArea => _inflightMap != null;

    private Outcome GetInflightFd(ReadOnlySpan<byte> p, ReplyBuffer reply)
    {
        if (!HasProtocolFeature(ProtocolFeature.InflightShmfd))
            return Outcome.Fail("GET_INFLIGHT_FD without VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD");
        ushort queues = BinaryPrimitives.ReadUInt16LittleEndian(p[16..]);
        ushort queueSize = BinaryPrimitives.ReadUInt16LittleEndian(p[18..]);
        if (queues == 0 || queues > _queues.Length || queueSize == 0 || queueSize > Virtqueue.MaxSize)
            return Outcome.Fail($"GET_INFLIGHT_FD for {queues} queues of {queueSize} (this device has {_queues.Length}, rings up to {Virtqueue.MaxSize})");
        ulong size = queues * Virtqueue.InflightQueueRegionSize(queueSize);
        var fd = FileDescriptors.CreateMemFd("vhost-inflight", (long)size);
        var r = reply.Reserve(Payload.Inflight);
        BinaryPrimitives.WriteUInt64LittleEndian(r, size);
        BinaryPrimitives.WriteUInt64LittleEndian(r[8..], 0);
        BinaryPrimitives.WriteUInt16LittleEndian(r[16..], queues);
        BinaryPrimitives.WriteUInt16LittleEndian(r[18..], queueSize);
        reply.Fd = fd;
        _logger.LogDebug("device {Id}: in-flight area of {Size} bytes for {Queues} queues of {QueueSize}", Id, size, queues, queueSize);
        return Outcome.Ok;
    }

    private Outcome SetInflightFd(ReadOnlySpan<byte> p, List<SafeFd?> fds)
    {
        var fd = Take(fds, 0);
        if (!HasProtocolFeature(ProtocolFeature.InflightShmfd))
        {
            fd.Dispose();
            return Outcome.Fail("SET_INFLIGHT_FD without VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD");
        }
        ulong size = BinaryPrimitives.ReadUInt64LittleEndian(p);
        ulong offset = BinaryPrimitives.ReadUInt64LittleEndian(p[8..]);
        ushort queues = BinaryPrimitives.ReadUInt16LittleEndian(p[16..]);
        ushort queueSize = BinaryPrimitives.ReadUInt16LittleEndian(p[18..]);
        ulong perQueue = Virtqueue.InflightQueueRegionSize(queueSize);
        string? error = null;
        FileDescriptors.Info info = default;
        if (queues == 0 || queues > _queues.Length)
            error = $"{queues} queues, but this device has {_queues.Length}";
        else if (queueSize == 0 || queueSize > Virtqueue.MaxSize)
            error = $"queue size {queueSize} (rings hold 1 to {Virtqueue.MaxSize})";
        else if (size < queues * perQueue || size > MaxInflightArea)
            error = $"an area of {size} bytes for {queues} queue(s) of {queueSize}, which need {queues * perQueue}";
        else if (offset > MaxInflightArea)
            error = $"offset {offset} is beyond {MaxInflightArea} bytes";
        // fstat before mmap: touching a mapping past the end of its file raises SIGBUS
        else if (!FileDescriptors.TryStat(fd, out info) || !info.IsRegular)
            error = "the fd is not a memory file";
        else if ((ulong)info.Size < offset + size)
            error = $"the fd holds {info.Size} bytes, not {size} at offset {offset}";
        if (error != null)
        {
            fd.Dispose();
            return Outcome.Fail($"SET_INFLIGHT_FD: {error}");
        }
        MemoryMapping map;
        try
        {
            map = MemoryMapping.Map(fd, (nuint)(offset + size), logger: _logger);
            map.Faulted = () => Fault("the in-flight area shrank under its mapping (its fd was truncated)");
        }
        catch (NativeException e)
        {
            fd.Dispose();
            return Outcome.Fail($"SET_INFLIGHT_FD: {e.Message}");
        }
        var old = _inflightMap;
        var oldFd = _inflightFd;
        WithAllQueuesLocked(() =>
        {
            for (int i = 0; i < _queues.Length; i++)
            {
                var w = i < queues ? map.Window.Slice((nuint)(offset + (ulong)i * perQueue), (nuint)perQueue) : default;
                _queues[i].SetInflightRegion(w, i < queues ? queueSize : 0);
            }
        });
        _inflightMap = map;
        _inflightFd = fd;
        old?.Dispose();
        oldFd?.Dispose();
        _logger.LogInformation("device {Id}: in-flight area of {Size} bytes for {Queues} queue(s) of {QueueSize}", Id, size, queues, queueSize);
        return Outcome.Ok;
    }

    /// <summary>Detaches the queues (they must be locked by the caller) and unmaps the area.</summary>
    private void ReleaseInflightLocked()
    {
        foreach (var q in _queues) q.SetInflightRegion(default, 0);
    }

    private void DisposeInflight()
    {
        _inflightMap?.Dispose();
        _inflightMap = null;
        _inflightFd?.Dispose();
        _inflightFd = null;
    }
}
