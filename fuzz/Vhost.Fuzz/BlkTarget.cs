using Vhost.Blk;
using Vhost.Rings;

namespace Vhost.Fuzz;

/// <summary>
/// Target (d): virtio-blk requests. One option byte (bit 0 read-only, bit 1 small limits: at most 4 ranges of
/// 64 sectors and write-through), then a ring as <see cref="FuzzRing"/> lays it out, whose chains (headers,
/// payloads, ranges, status bytes) go through <see cref="BlkRequestProcessor.Process"/> against a 64 KiB
/// in-memory disk. Besides anything thrown, the used length must fit the chain's writable bytes and the status
/// byte must be one the spec knows.
/// </summary>
internal static class BlkTarget
{
    private const long DiskBytes = 64 * 1024;
    private static readonly BlkRequestProcessor?[] Processors = new BlkRequestProcessor?[4];
    private static readonly BlkQueueStats Stats = new();

    public static void Run(ReadOnlySpan<byte> data)
    {
        var r = new Program.Reader(data);
        int variant = r.U8() & 3;
        var processor = Processors[variant] ??= Create(variant);
        var q = FuzzRing.Build(ref r, out int size, out byte cfg);
        if (q == null) return;
        var segments = new BufferSegment[(cfg & 0x40) != 0 ? 4 : 64];
        var server = new Server(processor);
        RingAccess.Drain(q, 4, segments, 2 * size + 2, locked: false, ref server);
        RingAccess.Stop(q);
        if (Log.Logger is Log.Stderr)
            Console.Error.WriteLine($"blk: {Stats.Reads} reads, {Stats.Writes} writes, {Stats.Flushes} flushes, {Stats.GetIds} get-ids, " +
                $"{Stats.Discards} discards, {Stats.WriteZeroes} write-zeroes, {Stats.Invalid} invalid, {Stats.Unsupported} unsupported");
    }

    private static BlkRequestProcessor Create(int variant)
    {
        bool small = (variant & 2) != 0;
        var options = new VirtioBlkOptions
        {
            ReadOnly = (variant & 1) != 0,
            IoThreads = 0,
            Writeback = !small,
            MaxDiscardSegments = small ? 4u : 16u,
            MaxWriteZeroesSegments = small ? 4u : 16u,
            MaxDiscardSectors = small ? 64u : 1u << 22,
            MaxWriteZeroesSectors = small ? 64u : 1u << 22,
        };
        // one disk and device per variant for the whole process: what they hold does not steer the checks
        var blk = new VirtioBlk(new MemoryDisk(DiskBytes, "fuzz-disk"), options);
        return new BlkRequestProcessor(blk, Log.Logger);
    }

    private readonly struct Server(BlkRequestProcessor processor) : IChainServer
    {
        public bool Serve(in DescriptorChain chain, BufferSegment[] segments, out uint written)
        {
            ChainTarget.Touch(chain, segments);
            written = processor.Process(0, chain, segments, Stats);
            if (written > chain.WritableBytes)
                throw new InvalidOperationException($"used length {written} beyond the chain's {chain.WritableBytes} writable bytes");
            if (written > 0)
            {
                // the status is the last byte of the last (writable) segment
                var last = segments[chain.SegmentStart + chain.SegmentCount - 1].Window;
                byte status = last.Span(last.Length - 1, 1)[0];
                if (status > (byte)BlkStatus.Unsupp) throw new InvalidOperationException($"status byte {status}");
            }
            return true;
        }
    }
}
