using System.Buffers.Binary;

namespace Vhost.Crypto;

/// <summary>The three CREATE_CRYPTO_SESSION payloads QEMU has sent.</summary>
public enum SessionLayout
{
    /// <summary>QEMU up to 7.0: 632 bytes, session id first, then op_code and the symmetric parameters.</summary>
    Qemu70,
    /// <summary>QEMU 7.1 to 8.0 (Debian's 7.2): 632 bytes, op_code removed, every scalar 4 bytes earlier.</summary>
    Qemu71,
    /// <summary>QEMU 8.1 on: 1072 bytes, a u64 op_code, the symmetric or akcipher union, the session id last.</summary>
    Qemu81,
}

/// <summary>The symmetric session parameters of any layout (QEMU's CryptoDevBackendSymSessionInfo), copied out of the message.</summary>
internal ref struct SymSessionInfo
{
    public uint OpCode;
    public uint CipherAlg;
    public uint KeyLen;
    public uint HashAlg;
    public uint HashResultLen;
    public uint AuthKeyLen;
    public uint AadLen;
    public SymOpType OpType;
    public byte Direction;
    public HashMode HashMode;
    public ChainOrder ChainOrder;
    public ReadOnlySpan<byte> Key;
    public ReadOnlySpan<byte> AuthKey;
}

/// <summary>The akcipher session parameters of the 8.1 layout (QEMU's CryptoDevBackendAsymSessionInfo), copied out of the message.</summary>
internal ref struct AsymSessionInfo
{
    public uint Algorithm;
    public uint KeyType;
    public uint KeyLen;
    public uint Padding;
    public uint Hash;
    public ReadOnlySpan<byte> Key;
}

/// <summary>Tells the layouts apart by size and content and reads the parameters.</summary>
internal static class SessionMessage
{
    public const int SmallSize = 632;
    public const int LargeSize = 1072;
    public const int MaxCipherKey = 64;
    public const int MaxAuthKey = 512;
    private const int KeyOffset = 56;
    private const int AuthKeyOffset = KeyOffset + MaxCipherKey;
    private const int LargeSessionIdOffset = 1064;

    /// <summary>Where the reply's session id goes.</summary>
    public static int SessionIdOffset(SessionLayout layout) => layout == SessionLayout.Qemu81 ? LargeSessionIdOffset : 0;

    /// <summary>
    /// A failed id in a reply to a payload of no layout: at offset 0 (where the 632-byte layouts keep it) and, in a
    /// payload longer than those, also in the last 8 bytes (where 8.1 keeps it); a payload under 8 bytes has no room.
    /// </summary>
    public static void WriteFailedId(Span<byte> reply, long id)
    {
        if (reply.Length >= 8) BinaryPrimitives.WriteInt64LittleEndian(reply, id);
        if (reply.Length > SmallSize) BinaryPrimitives.WriteInt64LittleEndian(reply[^8..], id);
    }

    /// <summary>Identifies the layout; null with the reason when the payload fits none.</summary>
    public static SessionLayout? Identify(ReadOnlySpan<byte> p, out string? error)
    {
        error = null;
        if (p.Length == LargeSize) return SessionLayout.Qemu81;
        if (p.Length != SmallSize)
        {
            error = $"payload of {p.Length} bytes fits no session layout ({SmallSize} for QEMU up to 8.0, {LargeSize} from 8.1)";
            return null;
        }
        // same size, scalars 4 bytes apart: only one reading is a sensible session (op_code values and key sizes differ)
        uint opCode = BinaryPrimitives.ReadUInt32LittleEndian(p[8..]);
        bool old = IsSymCreate(opCode) && Plausible(ReadSym(p, 12, opCode), withOpCode: true);
        bool mid = Plausible(ReadSym(p, 8, VirtioCryptoSpec.CipherCreateSession), withOpCode: false);
        if (old && !mid) return SessionLayout.Qemu70;
        if (mid && !old) return SessionLayout.Qemu71;
        error = old ? "632-byte payload reads as both QEMU 7.0's and 7.1's layout" : "632-byte payload is no sensible session in QEMU 7.0's or 7.1's layout";
        return null;
    }

    /// <summary>The 8.1 layout's op_code (symmetric or akcipher).</summary>
    public static ulong LargeOpCode(ReadOnlySpan<byte> p) => BinaryPrimitives.ReadUInt64LittleEndian(p);

    /// <summary>The symmetric parameters of a payload of a known layout (the 8.1 layout only when its op_code is symmetric).</summary>
    public static SymSessionInfo Read(ReadOnlySpan<byte> p, SessionLayout layout) => layout switch
    {
        SessionLayout.Qemu70 => ReadSym(p, 12, BinaryPrimitives.ReadUInt32LittleEndian(p[8..])),
        SessionLayout.Qemu71 => ReadSym(p, 8, VirtioCryptoSpec.CipherCreateSession),
        _ => ReadSym(p, 8, (uint)LargeOpCode(p)),
    };

    public const int MaxAsymKey = 1024;
    private const int AsymKeyOffset = 40;

    /// <summary>The 8.1 layout's akcipher parameters (algo, keytype, keylen, RSA padding and hash, a pointer, key[1024]).</summary>
    public static AsymSessionInfo ReadAsym(ReadOnlySpan<byte> p)
    {
        var s = new AsymSessionInfo
        {
            Algorithm = BinaryPrimitives.ReadUInt32LittleEndian(p[8..]),
            KeyType = BinaryPrimitives.ReadUInt32LittleEndian(p[12..]),
            KeyLen = BinaryPrimitives.ReadUInt32LittleEndian(p[16..]),
            Padding = BinaryPrimitives.ReadUInt32LittleEndian(p[20..]),
            Hash = BinaryPrimitives.ReadUInt32LittleEndian(p[24..]),
        };
        s.Key = p.Slice(AsymKeyOffset, (int)Math.Min(s.KeyLen, MaxAsymKey));
        return s;
    }

    public static bool IsSymCreate(ulong opCode) =>
        opCode == VirtioCryptoSpec.CipherCreateSession || opCode == VirtioCryptoSpec.HashCreateSession ||
        opCode == VirtioCryptoSpec.MacCreateSession || opCode == VirtioCryptoSpec.AeadCreateSession;

    private static SymSessionInfo ReadSym(ReadOnlySpan<byte> p, int at, uint opCode)
    {
        var s = new SymSessionInfo
        {
            OpCode = opCode,
            CipherAlg = BinaryPrimitives.ReadUInt32LittleEndian(p[at..]),
            KeyLen = BinaryPrimitives.ReadUInt32LittleEndian(p[(at + 4)..]),
            HashAlg = BinaryPrimitives.ReadUInt32LittleEndian(p[(at + 8)..]),
            HashResultLen = BinaryPrimitives.ReadUInt32LittleEndian(p[(at + 12)..]),
            AuthKeyLen = BinaryPrimitives.ReadUInt32LittleEndian(p[(at + 16)..]),
            AadLen = BinaryPrimitives.ReadUInt32LittleEndian(p[(at + 20)..]),
            OpType = (SymOpType)p[at + 24],
            Direction = p[at + 25],
            HashMode = (HashMode)p[at + 26],
            ChainOrder = (ChainOrder)p[at + 27],
        };
        // the key arrays sit at the same offsets in every layout; the lengths are checked before they are used
        s.Key = p.Slice(KeyOffset, (int)Math.Min(s.KeyLen, MaxCipherKey));
        s.AuthKey = p.Slice(AuthKeyOffset, (int)Math.Min(s.AuthKeyLen, MaxAuthKey));
        return s;
    }

    /// <summary>Whether the fields make a session QEMU could have sent (ranges, and key sizes the cipher allows).</summary>
    private static bool Plausible(in SymSessionInfo s, bool withOpCode)
    {
        if (s.KeyLen > MaxCipherKey || s.AuthKeyLen > MaxAuthKey || s.Direction > 2 || s.HashMode > HashMode.Nested
            || s.ChainOrder > ChainOrder.CipherThenHash || s.HashResultLen > 64) return false;
        bool cipherSession = s.OpCode == VirtioCryptoSpec.CipherCreateSession;
        if (cipherSession && s.OpType is not (SymOpType.Cipher or SymOpType.AlgorithmChaining)) return false;
        if (!withOpCode && s.OpType is not (SymOpType.Cipher or SymOpType.AlgorithmChaining)) return false;
        if (s.OpCode == VirtioCryptoSpec.AeadCreateSession) return s.CipherAlg <= (uint)AeadAlgorithm.ChaCha20Poly1305;
        if (!cipherSession) return true;
        if (s.CipherAlg > (uint)CipherAlgorithm.ZucEea3) return false;
        return (CipherAlgorithm)s.CipherAlg switch
        {
            CipherAlgorithm.AesEcb or CipherAlgorithm.AesCbc or CipherAlgorithm.AesCtr => s.KeyLen is 16 or 24 or 32,
            CipherAlgorithm.AesXts => s.KeyLen is 32 or 64,
            CipherAlgorithm.DesEcb or CipherAlgorithm.DesCbc => s.KeyLen == 8,
            CipherAlgorithm.TripleDesEcb or CipherAlgorithm.TripleDesCbc or CipherAlgorithm.TripleDesCtr => s.KeyLen is 16 or 24,
            CipherAlgorithm.None => s.OpType == SymOpType.AlgorithmChaining,
            _ => s.KeyLen > 0,
        };
    }
}
