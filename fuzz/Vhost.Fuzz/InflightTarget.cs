using System.Buffers.Binary;
using Vhost.Device;
using Vhost.Interop;
using Vhost.Protocol;
using Vhost.Rings;

namespace Vhost.Fuzz;

/// <summary>
/// Target (f): in-flight area recovery, split and packed. A front-end hands a back-end an in-flight area
/// (SET_INFLIGHT_FD) whose contents come from the input, with one or two rings; the back-end recovers from it at
/// ring start, resubmits, serves the rings and completes only the chains the input picks (the rest stay in
/// flight, as if it crashed). The front-end then scribbles on the area as the input says and gives it, with the
/// same guest memory, to a second back-end, which recovers from what the first one wrote and serves everything.
/// Input: config byte (bit 0 packed, 1 indirect, 2 event idx, 3 two queues, bits 4-6 size 2 &lt;&lt; n, bit 7 the
/// second back-end gets the first start's base, as QEMU sends after a crash, instead of GET_VRING_BASE's), a
/// completion pattern byte, a u16 base per queue, each queue's area bytes, each queue's descriptor table and avail
/// ring (packed: driver event area), the memory after the rings (0x16000 on, 40 KiB), then up to 8 scribbles
/// (u16 offset into the area, u8 value).
/// </summary>
internal static class InflightTarget
{
    private const ulong Base = 0x10000;
    private const int MemSize = 64 * 1024;
    private const ulong Data = Base + 0x6000;

    private static readonly VhostSocketOptions Options = new()
    {
        Path = "/fuzz",
        MaxQueues = 2,
        ProtocolFeatures = VhostSocketOptions.DefaultProtocolFeatures | 1UL << (int)ProtocolFeature.InflightShmfd,
    };

    private static ulong Desc(int q) => Base + (ulong)q * 0x3000;
    private static ulong Avail(int q) => Desc(q) + 0x1000;
    private static ulong Used(int q) => Desc(q) + 0x2000;

    public static void Run(ReadOnlySpan<byte> data) => RunCore(data, snapshot: false);

    /// <summary>For seeds: the first queue's area as the first back-end left it (null if it never ran).</summary>
    internal static byte[]? AreaAfterFirstBackEnd(ReadOnlySpan<byte> data) => RunCore(data, snapshot: true);

    private static byte[]? RunCore(ReadOnlySpan<byte> data, bool snapshot)
    {
        var r = new Program.Reader(data);
        byte cfg = r.U8();
        byte pattern = r.U8();
        bool packed = (cfg & 1) != 0;
        int queues = (cfg & 8) != 0 ? 2 : 1;
        int size = 2 << (cfg >> 4 & 7);
        bool staleBase = (cfg & 0x80) != 0;
        ulong features = VirtioFeature.Bit(VirtioFeature.Version1) | VirtioFeature.Bit(VirtioFeature.ProtocolFeatures)
            | (packed ? VirtioFeature.Bit(VirtioFeature.RingPacked) : 0)
            | ((cfg & 2) != 0 ? VirtioFeature.Bit(VirtioFeature.RingIndirectDesc) : 0)
            | ((cfg & 4) != 0 ? VirtioFeature.Bit(VirtioFeature.RingEventIdx) : 0);
        Span<uint> bases = stackalloc uint[2];
        for (int q = 0; q < 2; q++) bases[q] = r.U16();
        ulong perQueue = Virtqueue.InflightQueueRegionSize(size);
        ulong areaSize = (ulong)queues * perQueue;

        using var memFd = FileDescriptors.CreateMemFd("fuzz-guest", MemSize);
        using var areaFd = FileDescriptors.CreateMemFd("fuzz-inflight", (long)areaSize);
        using var area = MemoryMapping.Map(areaFd, (nuint)areaSize);
        for (int q = 0; q < queues; q++)
        {
            int used = packed ? 32 + 32 * size : 16 + 16 * size;
            r.Take(used).CopyTo(area.Window.Span((nuint)((ulong)q * perQueue), used));
        }
        using (var map = MemoryMapping.Map(memFd, MemSize))
        {
            var m = map.Window;
            for (int q = 0; q < queues; q++)
            {
                r.Take(16 * size).CopyTo(m.Span(At(Desc(q)), 16 * size));
                r.Take(packed ? 4 : 6 + 2 * size).CopyTo(m.Span(At(Avail(q)), 6 + 2 * size));
            }
            r.Take(MemSize - (int)At(Data)).CopyTo(m.Span(At(Data), MemSize - (int)At(Data)));
        }

        var segments = new BufferSegment[64];
        // the first back-end: completes what the pattern says and "crashes" with the rest in flight
        using (var first = new FuzzDevice(Options))
        {
            if (!SetUp(first, features, memFd, areaFd, areaSize, queues, size, bases)) return null;
            var partial = new PartialServer(pattern);
            for (int q = 0; q < queues; q++)
                RingAccess.Drain(first.Device.Queue(q), 8, segments, size + 2, locked: true, ref partial);
            for (int q = 0; q < queues; q++)
            {
                uint b = first.StopQueue((uint)q);
                if (!staleBase) bases[q] = b;
            }
        }
        if (snapshot) return area.Window.Span(0, packed ? 32 + 32 * size : 16 + 16 * size).ToArray();
        // what a front-end may do to the area between two back-ends
        for (int i = 0; i < 8 && !r.AtEnd; i++)
        {
            ulong at = r.U16();
            byte value = r.U8();
            if (at < areaSize) area.Window.Span((nuint)at, 1)[0] = value;
        }
        using var second = new FuzzDevice(Options);
        if (!SetUp(second, features, memFd, areaFd, areaSize, queues, size, bases)) return null;
        var touch = new TouchServer();
        for (int q = 0; q < queues; q++)
            RingAccess.Drain(second.Device.Queue(q), 8, segments, 2 * size + 2, locked: true, ref touch);
        return null;
    }

    private static bool SetUp(FuzzDevice dev, ulong features, SafeFd memFd, SafeFd areaFd, ulong areaSize, int queues, int size, ReadOnlySpan<uint> bases)
    {
        if (!dev.SendU64(VhostUserRequest.SetFeatures, features)) return false;
        if (!dev.SendU64(VhostUserRequest.SetProtocolFeatures, Options.ProtocolFeatures)) return false;
        if (!dev.SetMemTable(Base, MemSize, FileDescriptors.Duplicate(memFd))) return false;
        Span<byte> p = stackalloc byte[Payload.Inflight];
        p.Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(p, areaSize);
        BinaryPrimitives.WriteUInt16LittleEndian(p[16..], (ushort)queues);
        BinaryPrimitives.WriteUInt16LittleEndian(p[18..], (ushort)size);
        if (!dev.Send(VhostUserRequest.SetInflightFd, p, FileDescriptors.Duplicate(areaFd))) return false;
        for (int q = 0; q < queues; q++)
        {
            // a ring that cannot start (a base beyond a packed ring) is the input's choice, not a finding
            if (!dev.StartQueue((uint)q, (uint)size, bases[q], Desc(q), Avail(q), Used(q))) return false;
            if (!dev.SendState(VhostUserRequest.SetVringEnable, (uint)q, 1)) return false;
        }
        return true;
    }

    private static nuint At(ulong gpa) => (nuint)(gpa - Base);

    /// <summary>Touches every chain; completes it when the pattern's next bit is set, else leaves it in flight.</summary>
    private struct PartialServer(byte pattern) : IChainServer
    {
        private int _n;

        public bool Serve(in DescriptorChain chain, BufferSegment[] segments, out uint written)
        {
            ChainTarget.Touch(chain, segments);
            written = chain.WritableBytes;
            return (pattern >> (_n++ & 7) & 1) != 0;
        }
    }
}
