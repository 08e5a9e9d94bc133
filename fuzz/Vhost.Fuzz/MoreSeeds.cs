using System.Buffers.Binary;

namespace Vhost.Fuzz;

/// <summary>Starting inputs of the blk, nettx and inflight targets: well-formed requests, frames and areas.</summary>
internal static class MoreSeeds
{
    private const ushort Next = 1, Wr = 2, Indirect = 4;
    private const ushort PackedAvail = 1 << 7;

    public static void Write(string target, string dir)
    {
        switch (target)
        {
            case "blk": Blk(dir); break;
            case "nettx": NetTx(dir); break;
            case "inflight": Inflight(dir); break;
            case "crypto": Crypto(dir); break;
            case "cryptosession": CryptoSessions(dir); break;
            default: throw new ArgumentException($"no seeds for {target}");
        }
    }

    /// <summary>One descriptor: address, length, split flags (packed: the WRITE/NEXT/INDIRECT bits, AVAIL added).</summary>
    private readonly record struct D(ulong Addr, uint Len, ushort Flags);

    /// <summary>A ring of 8 holding <paramref name="chains"/> as the driver would post them (split: table + avail; packed: slots).</summary>
    private static (byte[] Table, byte[] Avail) Ring(bool packed, int size, params D[][] chains)
    {
        var table = new byte[16 * size];
        var avail = new byte[packed ? 4 : 6 + 2 * size];
        int slot = 0;
        for (int c = 0; c < chains.Length; c++)
        {
            int head = slot;
            for (int k = 0; k < chains[c].Length; k++, slot++)
            {
                var d = chains[c][k];
                bool more = k < chains[c].Length - 1;
                ushort flags = (ushort)(d.Flags | (more ? Next : 0));
                if (packed) Seeds.Desc(table.AsSpan(16 * slot), d.Addr, d.Len, (ushort)(flags | PackedAvail), (ushort)c, packed: true);
                else Seeds.Desc(table.AsSpan(16 * slot), d.Addr, d.Len, flags, more ? (ushort)(slot + 1) : (ushort)0, packed: false);
            }
            if (!packed) BinaryPrimitives.WriteUInt16LittleEndian(avail.AsSpan(4 + 2 * c), (ushort)head);
        }
        if (!packed) BinaryPrimitives.WriteUInt16LittleEndian(avail.AsSpan(2), (ushort)chains.Length);
        return (table, avail);
    }

    private static byte[] BlkHeader(uint type, ulong sector)
    {
        var h = new byte[16];
        BinaryPrimitives.WriteUInt32LittleEndian(h, type);
        BinaryPrimitives.WriteUInt64LittleEndian(h.AsSpan(8), sector);
        return h;
    }

    private static void Blk(string dir)
    {
        const ulong rest = FuzzRing.Rest;
        ulong hdr = rest, data = rest + 0x100, status = rest + 0x400, table = rest + 0x500;
        foreach (bool packed in new[] { false, true })
        {
            var cases = new (string Name, byte[] Header, D[] Chain, byte[] Payload)[]
            {
                ("in", BlkHeader(0, 3), [new(hdr, 16, 0), new(data, 512, Wr), new(status, 1, Wr)], []),
                ("out", BlkHeader(1, 127), [new(hdr, 16, 0), new(data, 512, 0), new(status, 1, Wr)], []),
                ("flush", BlkHeader(4, 0), [new(hdr, 16, 0), new(status, 1, Wr)], []),
                ("getid", BlkHeader(8, 0), [new(hdr, 16, 0), new(data, 20, Wr), new(status, 1, Wr)], []),
                ("discard", BlkHeader(11, 0), [new(hdr, 16, 0), new(data, 32, 0), new(status, 1, Wr)], Ranges((0, 8, 0), (64, 64, 0))),
                ("zeroes", BlkHeader(13, 0), [new(hdr, 16, 0), new(data, 16, 0), new(status, 1, Wr)], Ranges((120, 8, 1))),
                ("indirect", BlkHeader(0, 0), [new(table, 48, Indirect)], []),
            };
            foreach (var (name, header, chain, payload) in cases)
            {
                var (t, a) = Ring(packed, 8, chain);
                var mem = new byte[0x530];
                header.CopyTo(mem, 0);
                payload.CopyTo(mem, 0x100);
                if (name == "indirect")
                {
                    // header, one sector in, status: the indirect table at rest + 0x500 (packed tables are sequential)
                    Seeds.Desc(mem.AsSpan(0x500), hdr, 16, packed ? (ushort)0 : Next, packed ? (ushort)0 : (ushort)1, packed);
                    Seeds.Desc(mem.AsSpan(0x510), data, 512, packed ? Wr : (ushort)(Wr | Next), packed ? (ushort)0 : (ushort)2, packed);
                    Seeds.Desc(mem.AsSpan(0x520), status, 1, Wr, 0, packed);
                }
                // option byte: the first variant (read-write, default limits); ring of 8 with indirect and event idx
                byte[] seed = [0, (byte)((packed ? 1 : 0) | 2 << 1 | 0x30), 0, (byte)(packed ? 0x80 : 0), .. t, .. a, .. mem];
                File.WriteAllBytes(Path.Combine(dir, $"{name}-{(packed ? "packed" : "split")}"), seed);
            }
        }
    }

    private static byte[] CryptoRequest(uint opcode, ulong session, params uint[] fields)
    {
        var r = new byte[72];
        BinaryPrimitives.WriteUInt32LittleEndian(r, opcode);
        BinaryPrimitives.WriteUInt64LittleEndian(r.AsSpan(8), session);
        for (int i = 0; i < fields.Length; i++) BinaryPrimitives.WriteUInt32LittleEndian(r.AsSpan(24 + 4 * i), fields[i]);
        return r;
    }

    /// <summary>One seed per session of <see cref="CryptoTarget"/>: request, IV, source readable; destination, digest, status writable.</summary>
    private static void Crypto(string dir)
    {
        const ulong rest = FuzzRing.Rest;
        ulong req = rest, iv = rest + 0x100, src = rest + 0x200, dst = rest + 0x400, status = rest + 0x600;
        var cases = new (string Name, byte[] Request, uint Iv, uint Src, uint Dst)[]
        {
            ("cbc-enc", CryptoRequest(0x000, 1, 16, 64, 64, 0, 0, 0, 0, 0, 0, 0, 1), 16, 64, 64),
            ("cbc-dec", CryptoRequest(0x001, 2, 16, 64, 64, 0, 0, 0, 0, 0, 0, 0, 1), 16, 64, 64),
            ("ecb", CryptoRequest(0x000, 3, 0, 64, 64, 0, 0, 0, 0, 0, 0, 0, 1), 0, 64, 64),
            ("3des", CryptoRequest(0x000, 4, 8, 64, 64, 0, 0, 0, 0, 0, 0, 0, 1), 8, 64, 64),
            ("chain-cth", CryptoRequest(0x000, 5, 16, 64, 64, 16, 48, 0, 64, 0, 32, 0, 2), 16, 64, 96),
            ("chain-htc", CryptoRequest(0x001, 6, 16, 64, 64, 0, 64, 0, 64, 0, 32, 0, 2), 16, 64, 96),
            ("sha256", CryptoRequest(0x100, 7, 64, 32), 0, 64, 32),
            ("hmac", CryptoRequest(0x200, 8, 64, 20), 0, 64, 20),
            ("gcm", CryptoRequest(0x300, 9, 12, 16, 48, 64, 16), 12, 64, 64),
            ("ccm", CryptoRequest(0x300, 10, 13, 0, 64, 72, 8), 13, 64, 72),
            ("chacha", CryptoRequest(0x301, 11, 12, 0, 64, 48, 16), 12, 64, 48),
            ("closed", CryptoRequest(0x000, 12, 16, 64, 64, 0, 0, 0, 0, 0, 0, 0, 1), 16, 64, 64),
            ("rsa-sign", CryptoRequest(0x402, 13, 32, 128), 0, 32, 128),
        };
        foreach (var (name, request, ivLen, srcLen, dstLen) in cases)
        {
            var chain = new List<D> { new(req, 72, 0) };
            if (ivLen > 0) chain.Add(new(iv, ivLen, 0));
            chain.Add(new(src, srcLen, 0));
            chain.Add(new(dst, dstLen, Wr));
            chain.Add(new(status, 1, Wr));
            var (t, a) = Ring(false, 8, [.. chain]);
            var mem = new byte[0x601];
            request.CopyTo(mem, 0);
            for (int i = 0; i < 64; i++) mem[0x200 + i] = (byte)i;
            // option byte: the 4 KiB limit; a split ring of 8 with indirect and event idx
            byte[] seed = [0, 2 << 1 | 0x30, 0, 0, .. t, .. a, .. mem];
            File.WriteAllBytes(Path.Combine(dir, name), seed);
        }
    }

    /// <summary>A cipher session in each layout, a chained one, an AEAD one and an akcipher op_code.</summary>
    private static void CryptoSessions(string dir)
    {
        static byte[] Small(bool withOpCode, uint alg, byte opType)
        {
            var p = new byte[632];
            int at = withOpCode ? 12 : 8;
            if (withOpCode) BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(8), 2);
            BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(at), alg);
            BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(at + 4), 16);
            if (opType == 2)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(at + 8), 4);
                BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(at + 12), 32);
                BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(at + 16), 20);
            }
            p[at + 24] = opType;
            p[at + 25] = 1;
            p[at + 26] = (byte)(opType == 2 ? 2 : 0);
            p[at + 27] = (byte)(opType == 2 ? 2 : 0);
            return p;
        }
        static byte[] Large(ulong op, uint alg, uint keyLen, uint result)
        {
            var p = new byte[1072];
            BinaryPrimitives.WriteUInt64LittleEndian(p, op);
            BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(8), alg);
            BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(12), keyLen);
            BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(20), result);
            p[32] = 1;
            p[33] = 1;
            return p;
        }
        File.WriteAllBytes(Path.Combine(dir, "qemu70-cbc"), [0, .. Small(true, 3, 1)]);
        File.WriteAllBytes(Path.Combine(dir, "qemu71-ecb"), [0, .. Small(false, 2, 1)]);
        File.WriteAllBytes(Path.Combine(dir, "qemu71-chain"), [0, .. Small(false, 3, 2)]);
        File.WriteAllBytes(Path.Combine(dir, "qemu81-cbc"), [1, .. Large(0x02, 3, 16, 0)]);
        File.WriteAllBytes(Path.Combine(dir, "qemu81-gcm"), [1, .. Large(0x302, 1, 16, 16)]);
        File.WriteAllBytes(Path.Combine(dir, "qemu81-rsa"), [1, .. Large(0x404, 1, 0, 0)]);
        File.WriteAllBytes(Path.Combine(dir, "short"), [12, 1, 2, 3]);
    }

    private static byte[] Ranges(params (ulong Sector, uint Count, uint Flags)[] ranges)
    {
        var b = new byte[16 * ranges.Length];
        for (int i = 0; i < ranges.Length; i++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16 * i), ranges[i].Sector);
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(16 * i + 8), ranges[i].Count);
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(16 * i + 12), ranges[i].Flags);
        }
        return b;
    }

    private static void NetTx(string dir)
    {
        const ulong data = 0x16000;
        foreach (bool packed in new[] { false, true })
        {
            // packed, indirect, event idx, mergeable, VERSION_1; csum, host TSO4 and guest csum
            int pick = (packed ? 1 : 0) | 1 << 1 | 1 << 2 | 1 << 3 | 1 << 4 | 1 << 6 | 1 << 7 | 1 << 11;
            var (tt, ta) = Ring(packed, 8,
                [new(data, 12 + 60, 0)],
                [new(data + 0x100, 12, 0), new(data + 0x200, 100, 0)],
                [new(data + 0x400, 12, 0), new(data + 0x500, 200, 0)]);
            var (rt, ra) = Ring(packed, 8,
                [new(0x20000, 2048, Wr)], [new(0x20800, 2048, Wr)], [new(0x21000, 2048, Wr)], [new(0x21800, 2048, Wr)]);
            var mem = new byte[0x600];
            Frame(mem.AsSpan(12, 60));
            // a checksum request, then a TSO request (both need the offloads picked above)
            NetHeader(mem.AsSpan(0x100), flags: 1, gso: 0, hdrLen: 0, gsoSize: 0, csumStart: 34, csumOffset: 16);
            Frame(mem.AsSpan(0x200, 100));
            NetHeader(mem.AsSpan(0x400), flags: 1, gso: 1, hdrLen: 54, gsoSize: 100, csumStart: 34, csumOffset: 16);
            Frame(mem.AsSpan(0x500, 200));
            ushort b = (ushort)(packed ? 0x8000 : 0);
            byte[] seed = [(byte)pick, (byte)(pick >> 8), 0x22, (byte)b, (byte)(b >> 8), (byte)b, (byte)(b >> 8), .. tt, .. ta, .. rt, .. ra, .. mem];
            File.WriteAllBytes(Path.Combine(dir, packed ? "packed" : "split"), seed);
        }
    }

    private static void NetHeader(Span<byte> h, byte flags, byte gso, ushort hdrLen, ushort gsoSize, ushort csumStart, ushort csumOffset)
    {
        h[0] = flags;
        h[1] = gso;
        BinaryPrimitives.WriteUInt16LittleEndian(h[2..], hdrLen);
        BinaryPrimitives.WriteUInt16LittleEndian(h[4..], gsoSize);
        BinaryPrimitives.WriteUInt16LittleEndian(h[6..], csumStart);
        BinaryPrimitives.WriteUInt16LittleEndian(h[8..], csumOffset);
    }

    /// <summary>Ethernet + IPv4 + TCP header bytes, enough for the header checks to look plausible.</summary>
    private static void Frame(Span<byte> f)
    {
        f[..6].Fill(0xff);
        f[6] = 0x02;
        f[11] = 0x02;
        BinaryPrimitives.WriteUInt16BigEndian(f[12..], 0x0800);
        f[14] = 0x45;
        f[23] = 6;
    }

    private static void Inflight(string dir)
    {
        const ulong data = 0x16000;
        foreach (bool packed in new[] { false, true })
        {
            foreach (int queues in new[] { 1, 2 })
            {
                const int size = 8;
                byte cfg = (byte)((packed ? 1 : 0) | 2 | (queues == 2 ? 8 : 0) | 2 << 4);
                var chains = new D[6][];
                for (int i = 0; i < chains.Length; i++)
                    chains[i] = i == 3 ? [new(data + (ulong)i * 0x100, 16, 0), new(data + (ulong)i * 0x100 + 0x80, 64, Wr)] : [new(data + (ulong)i * 0x100, 64, Wr)];
                var (t, a) = Ring(packed, size, chains);
                int areaBytes = packed ? 32 + 32 * size : 16 + 16 * size;
                ushort b = (ushort)(packed ? 0x8000 : 0);
                // a fresh area (the first back-end initialises it) and every other chain left in flight
                var seed = Compose(cfg, 0x55, b, queues, new byte[areaBytes], t, a);
                string name = $"{(packed ? "packed" : "split")}-{queues}q";
                File.WriteAllBytes(Path.Combine(dir, name), seed);
                // the same with the area as the first back-end left it: real records for the first recovery
                var recorded = InflightTarget.AreaAfterFirstBackEnd(seed);
                if (recorded != null)
                    File.WriteAllBytes(Path.Combine(dir, name + "-recorded"), Compose(cfg, 0x0f, b, queues, recorded, t, a));
            }
        }
    }

    private static byte[] Compose(byte cfg, byte pattern, ushort b, int queues, byte[] area, byte[] table, byte[] avail)
    {
        var s = new List<byte> { cfg, pattern, (byte)b, (byte)(b >> 8), (byte)b, (byte)(b >> 8) };
        for (int q = 0; q < queues; q++) s.AddRange(area);
        for (int q = 0; q < queues; q++)
        {
            s.AddRange(table);
            s.AddRange(avail);
        }
        return [.. s];
    }
}
