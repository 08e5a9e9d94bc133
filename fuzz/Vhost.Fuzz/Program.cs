using System.Buffers.Binary;
using SharpFuzz;
using Vhost.Device;
using Vhost.Interop;
using Vhost.Memory;
using Vhost.Protocol;
using Vhost.Rings;

namespace Vhost.Fuzz;

/// <summary>
/// SharpFuzz entry point. Every target turns the input into what a hostile front-end could send and
/// lets any exception escape: in the library an exception out of a handler closes a connection, out of
/// the data path it reaches the application, so both count as findings.
/// Usage: Vhost.Fuzz [-v] TARGET [FILE]   (with FILE: run that input once, for reproducing a crash; -v prints the library's log)
/// </summary>
public static class Program
{
    /// <summary>Every target by name: what run.sh, the seeds and the smoke test run.</summary>
    internal static readonly IReadOnlyDictionary<string, Action<ReadOnlySpan<byte>>> Targets = new Dictionary<string, Action<ReadOnlySpan<byte>>>
    {
        ["messages"] = MessageTarget.Run,
        ["memtable"] = MemTableTarget.Run,
        ["chains"] = ChainTarget.Run,
        ["blk"] = BlkTarget.Run,
        ["nettx"] = NetTxTarget.Run,
        ["inflight"] = InflightTarget.Run,
        ["crypto"] = CryptoTarget.Run,
        ["cryptosession"] = CryptoSessionTarget.Run,
    };

    public static int Main(string[] args)
    {
        if (args.Length == 0)
        {
            Console.Error.WriteLine($"usage: Vhost.Fuzz {string.Join('|', Targets.Keys)} [input-file] | seed TARGET DIR");
            return 2;
        }
        if (args[0] == "-v")
        {
            Log.Logger = new Log.Stderr();
            args = args[1..];
        }
        if (args.Length == 0) return 2;
        if (args[0] == "seed" && args.Length == 3)
        {
            Seeds.Write(args[1], args[2]);
            return 0;
        }
        if (!Targets.TryGetValue(args[0], out var target))
        {
            Console.Error.WriteLine($"unknown target {args[0]}");
            return 2;
        }
        if (args.Length > 1)
        {
            target(File.ReadAllBytes(args[1]));
            return 0;
        }
        Fuzzer.Run(stream =>
        {
            using var ms = new MemoryStream();
            stream.CopyTo(ms);
            target(ms.GetBuffer().AsSpan(0, (int)ms.Length));
        });
        return 0;
    }

    /// <summary>Reads input a few bytes at a time; past the end it yields zeros, so every input is usable.</summary>
    internal ref struct Reader(ReadOnlySpan<byte> data)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        private int _pos;

        public readonly bool AtEnd => _pos >= _data.Length;

        public byte U8() => _pos < _data.Length ? _data[_pos++] : (byte)0;

        public ushort U16() => (ushort)(U8() | U8() << 8);

        public uint U32() => (uint)(U16() | U16() << 16);

        public ulong U64() => U32() | (ulong)U32() << 32;

        public ReadOnlySpan<byte> Take(int n)
        {
            int k = Math.Min(n, _data.Length - _pos);
            if (k <= 0) return [];
            var s = _data.Slice(_pos, k);
            _pos += k;
            return s;
        }
    }
}

/// <summary>
/// Target (a): a stream of vhost-user messages through the same checks the connection makes (version,
/// reply bit, size, RequestTable framing) into VhostDevice.Handle. Each message is preceded by one fd
/// byte: low nibble = fd count (0-9), bit 4 = memfds (else eventfds), bits 5-7 = memfd size class.
/// </summary>
internal static class MessageTarget
{
    public static void Run(ReadOnlySpan<byte> data)
    {
        var options = new VhostSocketOptions { Path = "/fuzz", MaxQueues = 2, MaxMemorySlots = 8 };
        var device = new VhostDevice(options, Log.Logger, null);
        var reply = new ReplyBuffer();
        var fds = new List<SafeFd?>();
        var r = new Program.Reader(data);
        try
        {
            for (int count = 0; count < 64 && !r.AtEnd; count++)
            {
                byte fdSpec = r.U8();
                var header = new MessageHeader(r.U32(), r.U32(), r.U32());
                // the connection closes on these before reading the payload: so do we
                if ((header.Flags & MessageHeader.VersionMask) != MessageHeader.Version) break;
                if ((header.Flags & MessageHeader.ReplyFlag) != 0) break;
                if (header.Size > MessageHeader.MaxPayload) break;
                var payload = r.Take((int)header.Size);
                if (payload.Length != (int)header.Size) break;
                int nfds = fdSpec & 0xf;
                if (nfds > UnixSocket.MaxFds) break; // the connection refuses more than 8
                for (int i = 0; i < nfds; i++)
                    fds.Add((fdSpec & 0x10) != 0 ? FileDescriptors.CreateMemFd("fuzz", 4096L << (fdSpec >> 5)) : EventFd.Create(nonBlocking: true));
                var spec = RequestTable.Get(header.Request);
                if (spec is not { } s || s.Request == VhostUserRequest.None) break;
                if (s.CheckFraming(payload.Length, fds.Count) != null) break;
                reply.Clear();
                var outcome = device.Handle(header, payload, fds, reply);
                foreach (var fd in fds) fd?.Dispose();
                fds.Clear();
                if (outcome.Kind == OutcomeKind.Close) break;
                device.CheckReady();
                if (device.FaultReason != null) break;
                TouchQueues(device);
            }
        }
        finally
        {
            foreach (var fd in fds) fd?.Dispose();
            device.Release();
        }
    }

    /// <summary>Runs the data path of every started queue once, as an application would after a kick.</summary>
    internal static void TouchQueues(VhostDevice device)
    {
        var segments = new BufferSegment[64];
        var touch = new TouchServer();
        foreach (var q in device.Queues) RingAccess.Drain(q, 8, segments, 1, locked: true, ref touch);
    }
}

/// <summary>
/// Target (b): memory tables. The input describes up to 8 regions (32 bytes each, as on the wire) and
/// the real size of each region's memfd; they go through SET_MEM_TABLE, then ADD/REM_MEM_REG, and
/// every mapped region is read at its first and last byte (a region beyond its fd would SIGBUS here).
/// </summary>
internal static class MemTableTarget
{
    public static void Run(ReadOnlySpan<byte> data)
    {
        var options = new VhostSocketOptions { Path = "/fuzz", MaxQueues = 1, MaxMemorySlots = 8 };
        var device = new VhostDevice(options, Log.Logger, null);
        var reply = new ReplyBuffer();
        var fds = new List<SafeFd?>();
        var r = new Program.Reader(data);
        Span<NativeWindow> pieces = stackalloc NativeWindow[4];
        try
        {
            for (int round = 0; round < 4 && !r.AtEnd; round++)
            {
                byte op = r.U8();
                int n = op & 0xf;
                var kind = (op >> 4 & 3) switch
                {
                    0 => VhostUserRequest.SetMemTable,
                    1 => VhostUserRequest.AddMemReg,
                    2 => VhostUserRequest.RemMemReg,
                    _ => VhostUserRequest.SetMemTable,
                };
                if (kind != VhostUserRequest.SetMemTable) n = 1;
                var payload = new byte[Payload.MemoryTableHeader + Math.Max(n, 1) * Payload.MemoryRegion];
                BinaryPrimitives.WriteUInt32LittleEndian(payload, (uint)n);
                for (int i = 0; i < n; i++)
                {
                    var reg = payload.AsSpan(Payload.MemoryTableHeader + i * Payload.MemoryRegion);
                    // small numbers dominate so that sizes and offsets often fit the fd
                    BinaryPrimitives.WriteUInt64LittleEndian(reg, Scaled(ref r));
                    BinaryPrimitives.WriteUInt64LittleEndian(reg[8..], Scaled(ref r));
                    BinaryPrimitives.WriteUInt64LittleEndian(reg[16..], Scaled(ref r));
                    BinaryPrimitives.WriteUInt64LittleEndian(reg[24..], Scaled(ref r));
                    long fdSize = (long)(r.U16() & 0x3ff) * 256;
                    if (kind != VhostUserRequest.RemMemReg) fds.Add(FileDescriptors.CreateMemFd("fuzz", fdSize));
                }
                int size = kind == VhostUserRequest.SetMemTable ? Payload.MemoryTableHeader + n * Payload.MemoryRegion : Payload.SingleMemoryRegion;
                if (n > Payload.MaxMemoryTableRegions) break;
                var header = new MessageHeader((uint)kind, MessageHeader.Version, (uint)size);
                if (RequestTable.Get((uint)kind)!.Value.CheckFraming(size, fds.Count) != null) break;
                reply.Clear();
                device.Handle(header, payload.AsSpan(0, size), fds, reply);
                foreach (var fd in fds) fd?.Dispose();
                fds.Clear();
                foreach (var region in device.Memory.Regions)
                {
                    // every byte of a mapped region must be backed by the fd
                    var w = region.Window;
                    _ = w.Ref<byte>(0);
                    _ = w.Ref<byte>(w.Length - 1);
                }
                ulong probe = Scaled(ref r);
                uint len = r.U16();
                if (device.Memory.TryTranslate(probe, len, out var win) && len > 0)
                {
                    _ = win.Ref<byte>(0);
                    _ = win.Ref<byte>(win.Length - 1);
                }
                int k = device.Memory.TranslateSplit(probe, len, pieces);
                ulong total = 0;
                for (int i = 0; i < k; i++) total += pieces[i].Length;
                if (k > 0 && total != len) throw new InvalidOperationException($"TranslateSplit gave {total} bytes for {len}");
            }
        }
        finally
        {
            foreach (var fd in fds) fd?.Dispose();
            device.Release();
        }
    }

    /// <summary>One selector byte picks a magnitude, so both tiny and wrapping values come up.</summary>
    private static ulong Scaled(ref Program.Reader r)
    {
        byte sel = r.U8();
        return (sel & 3) switch
        {
            0 => r.U16(),
            1 => (ulong)r.U16() << 8,
            2 => r.U32(),
            _ => r.U64(),
        };
    }
}

/// <summary>
/// Target (c): the chain walker. A 64 KiB guest memory at GPA 0x10000 (UVA = GPA) holds a ring whose
/// descriptor table / avail ring (split) or descriptor ring (packed) come from the input, the rest of the
/// input filling memory after the rings (indirect tables, buffers). Pops until the ring is empty and
/// touches every segment; a segment outside guest memory would throw or fault here.
/// </summary>
internal static class ChainTarget
{
    public static void Run(ReadOnlySpan<byte> data)
    {
        var r = new Program.Reader(data);
        var q = FuzzRing.Build(ref r, out int size, out byte cfg);
        if (q == null) return;
        var segments = new BufferSegment[(cfg & 0x40) != 0 ? 4 : 64];
        var touch = new TouchServer();
        RingAccess.Drain(q, 4, segments, 2 * size + 2, locked: false, ref touch);
        RingAccess.Stop(q);
    }

    /// <summary>Reads and writes every segment end; checks the byte counts add up.</summary>
    internal static void Touch(in DescriptorChain c, BufferSegment[] segments)
    {
        ulong readable = 0, writable = 0;
        for (int s = c.SegmentStart; s < c.SegmentStart + c.SegmentCount; s++)
        {
            var w = segments[s].Window;
            if (w.Length == 0) continue;
            _ = w.Ref<byte>(0);
            _ = w.Ref<byte>(w.Length - 1);
            if (segments[s].IsWritable) { w.Ref<byte>(0) = 0; writable += w.Length; }
            else readable += w.Length;
            if (segments[s].IsWritable != (s - c.SegmentStart >= c.ReadableSegments))
                throw new InvalidOperationException("readable and writable segments out of order");
        }
        if (readable != c.ReadableBytes || writable != c.WritableBytes)
            throw new InvalidOperationException($"segment bytes {readable}/{writable} disagree with the chain {c.ReadableBytes}/{c.WritableBytes}");
    }
}

/// <summary>Starting inputs: one well-formed case per target, so the fuzzer begins past the first checks.</summary>
internal static class Seeds
{
    public static void Write(string target, string dir)
    {
        Directory.CreateDirectory(dir);
        var b = new List<byte>();
        switch (target)
        {
            case "messages":
                Msg(b, 0, VhostUserRequest.GetFeatures, []);
                Msg(b, 0, VhostUserRequest.SetFeatures, U64(VhostSocketOptions.DefaultFeatures & ~VirtioFeature.Bit(VirtioFeature.RingPacked)));
                var table = new byte[8 + 32];
                table[0] = 1;
                BinaryPrimitives.WriteUInt64LittleEndian(table.AsSpan(16), 0x10000); // size
                BinaryPrimitives.WriteUInt64LittleEndian(table.AsSpan(24), 0x10000); // uva
                Msg(b, 0x10 | 4 << 5 | 1, VhostUserRequest.SetMemTable, table);
                Msg(b, 0, VhostUserRequest.SetVringNum, State(0, 8));
                var addr = new byte[40];
                BinaryPrimitives.WriteUInt64LittleEndian(addr.AsSpan(8), 0x10000);
                BinaryPrimitives.WriteUInt64LittleEndian(addr.AsSpan(16), 0x12000);
                BinaryPrimitives.WriteUInt64LittleEndian(addr.AsSpan(24), 0x11000);
                Msg(b, 0, VhostUserRequest.SetVringAddr, addr);
                Msg(b, 0, VhostUserRequest.SetVringBase, State(0, 0));
                Msg(b, 1, VhostUserRequest.SetVringCall, U64(0));
                Msg(b, 1, VhostUserRequest.SetVringKick, U64(0));
                Msg(b, 0, VhostUserRequest.GetVringBase, State(0, 0));
                break;
            case "memtable":
                b.AddRange([0x01, 0, 0, 0, 0, 0x10, 2, 0, 0, 1, 0, 0, 0, 0, 16, 0, 0, 0x10, 0, 16, 0]);
                break;
            case "chains":
                foreach (bool packed in new[] { false, true })
                {
                    b.Clear();
                    b.Add((byte)((packed ? 1 : 0) | 2 << 1 | 0x30));
                    b.AddRange(packed ? [0x00, 0x80] : [0, 0]);
                    var ring = new byte[16 * 8];
                    Desc(ring.AsSpan(0), 0x18000, 64, packed ? (ushort)(1 | 1 << 7) : (ushort)1, packed ? (ushort)5 : (ushort)1, packed);
                    Desc(ring.AsSpan(16), 0x18100, 64, packed ? (ushort)(2 | 1 << 7) : (ushort)2, packed ? (ushort)5 : (ushort)0, packed);
                    b.AddRange(ring);
                    if (!packed) b.AddRange([0, 0, 1, 0, 0, 0]);
                    else b.AddRange([0, 0, 0, 0]);
                    File.WriteAllBytes(Path.Combine(dir, packed ? "packed" : "split"), [.. b]);
                }
                return;
            default:
                MoreSeeds.Write(target, dir);
                return;
        }
        File.WriteAllBytes(Path.Combine(dir, "seed"), [.. b]);
    }

    internal static void Desc(Span<byte> d, ulong addr, uint len, ushort flags, ushort nextOrId, bool packed)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(d, addr);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], len);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], packed ? nextOrId : flags);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], packed ? flags : nextOrId);
    }

    private static byte[] U64(ulong v)
    {
        var a = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(a, v);
        return a;
    }

    private static byte[] State(uint index, uint num)
    {
        var a = new byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(a, index);
        BinaryPrimitives.WriteUInt32LittleEndian(a.AsSpan(4), num);
        return a;
    }

    private static void Msg(List<byte> b, byte fdSpec, VhostUserRequest request, byte[] payload)
    {
        b.Add(fdSpec);
        var h = new byte[12];
        new MessageHeader((uint)request, MessageHeader.Version, (uint)payload.Length).Write(h);
        b.AddRange(h);
        b.AddRange(payload);
    }
}
