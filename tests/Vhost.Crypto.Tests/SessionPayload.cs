using System.Buffers.Binary;

namespace Vhost.Crypto.Tests;

/// <summary>The symmetric session parameters a test asks for.</summary>
internal sealed record SymParams
{
    public uint OpCode { get; init; } = VirtioCryptoSpec.CipherCreateSession;
    public uint CipherAlg { get; init; }
    public byte[] Key { get; init; } = [];
    public uint HashAlg { get; init; }
    public uint HashResultLen { get; init; }
    public byte[] AuthKey { get; init; } = [];
    public uint AadLen { get; init; }
    public SymOpType OpType { get; init; } = SymOpType.Cipher;
    public byte Direction { get; init; } = 1;
    public HashMode HashMode { get; init; }
    public ChainOrder Order { get; init; }

    public static SymParams Cipher(CipherAlgorithm alg, byte[] key, bool encrypt) =>
        new() { CipherAlg = (uint)alg, Key = key, Direction = encrypt ? (byte)1 : (byte)2 };
}

/// <summary>Builds CREATE_CRYPTO_SESSION payloads in QEMU's three layouts, as QEMU lays them out (pointers filled with junk).</summary>
internal static class SessionPayload
{
    public static byte[] Build(SessionLayout layout, SymParams p)
    {
        var b = new byte[layout == SessionLayout.Qemu81 ? 1072 : 632];
        int at;
        switch (layout)
        {
            case SessionLayout.Qemu70:
                BinaryPrimitives.WriteInt64LittleEndian(b, -1);
                BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), p.OpCode);
                at = 12;
                break;
            case SessionLayout.Qemu71:
                BinaryPrimitives.WriteInt64LittleEndian(b, -1);
                at = 8;
                break;
            default:
                BinaryPrimitives.WriteUInt64LittleEndian(b, p.OpCode);
                BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(1064), -1);
                at = 8;
                break;
        }
        var s = b.AsSpan(at);
        BinaryPrimitives.WriteUInt32LittleEndian(s, p.CipherAlg);
        BinaryPrimitives.WriteUInt32LittleEndian(s[4..], (uint)p.Key.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(s[8..], p.HashAlg);
        BinaryPrimitives.WriteUInt32LittleEndian(s[12..], p.HashResultLen);
        BinaryPrimitives.WriteUInt32LittleEndian(s[16..], (uint)p.AuthKey.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(s[20..], p.AadLen);
        s[24] = (byte)p.OpType;
        s[25] = p.Direction;
        s[26] = (byte)p.HashMode;
        s[27] = (byte)p.Order;
        // host pointers QEMU copies along with the struct
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(40), 0x5555_dead_beef_0000);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(48), 0x5555_dead_beef_1000);
        p.Key.CopyTo(b.AsSpan(56));
        p.AuthKey.CopyTo(b.AsSpan(120));
        return b;
    }

    public static long SessionId(SessionLayout layout, ReadOnlySpan<byte> reply) =>
        BinaryPrimitives.ReadInt64LittleEndian(reply[(layout == SessionLayout.Qemu81 ? 1064 : 0)..]);
}
