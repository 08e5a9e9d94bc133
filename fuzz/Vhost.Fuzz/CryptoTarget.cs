using System.Buffers.Binary;
using Vhost.Crypto;
using Vhost.Rings;

namespace Vhost.Fuzz;

/// <summary>
/// Target (g): virtio-crypto data requests. One option byte (bit 0: a 64-byte data limit instead of 4 KiB), then a
/// ring as <see cref="FuzzRing"/> lays it out, whose chains go through <see cref="CryptoRequestProcessor.Process"/>
/// with sessions 1..11 open (AES-CBC encrypt and decrypt, AES-ECB, 3DES-CBC, AES-CBC+HMAC-SHA256 both orders,
/// SHA-256, HMAC-SHA1, AES-GCM, AES-CCM, ChaCha20-Poly1305), session 12 closed and 13 an RSA-1024 private key. Besides anything thrown, the used
/// length must fit the chain's writable bytes and the status byte must be one the spec knows.
/// </summary>
internal static class CryptoTarget
{
    private static readonly CryptoRequestProcessor?[] Processors = new CryptoRequestProcessor?[2];
    private static readonly CryptoStats Stats = new();

    public static void Run(ReadOnlySpan<byte> data)
    {
        var r = new Program.Reader(data);
        int variant = r.U8() & 1;
        var processor = Processors[variant] ??= Create(variant);
        var q = FuzzRing.Build(ref r, out int size, out byte cfg);
        if (q == null) return;
        var segments = new BufferSegment[(cfg & 0x40) != 0 ? 4 : 64];
        var server = new Server(processor);
        RingAccess.Drain(q, 4, segments, 2 * size + 2, locked: false, ref server);
        RingAccess.Stop(q);
        if (Log.Logger is Log.Stderr)
            Console.Error.WriteLine($"crypto: {Stats.Requests} requests, {Stats.Bytes} bytes, {Stats.Failed} refused, " +
                $"{Stats.NotSupported} unsupported, {Stats.InvalidSession} invalid session, {Stats.BadMessages} bad messages");
    }

    private static CryptoRequestProcessor Create(int variant)
    {
        var sessions = new CryptoSessions(64);
        byte[] aes = new byte[16], des = new byte[24], chacha = new byte[32], mac = new byte[20];
        for (int i = 0; i < des.Length; i++) des[i] = (byte)(i * 7 + 1);
        for (int i = 0; i < chacha.Length; i++) chacha[i] = (byte)i;
        uint cipher = VirtioCryptoSpec.CipherCreateSession;
        // the order gives the ids 1..11 the seeds name
        Open(sessions, cipher, SymOpType.Cipher, (uint)CipherAlgorithm.AesCbc, aes, 1);
        Open(sessions, cipher, SymOpType.Cipher, (uint)CipherAlgorithm.AesCbc, aes, 2);
        Open(sessions, cipher, SymOpType.Cipher, (uint)CipherAlgorithm.AesEcb, aes, 1);
        Open(sessions, cipher, SymOpType.Cipher, (uint)CipherAlgorithm.TripleDesCbc, des, 1);
        Open(sessions, cipher, SymOpType.AlgorithmChaining, (uint)CipherAlgorithm.AesCbc, aes, 1, HashMode.Auth, 4, 32, mac, ChainOrder.CipherThenHash);
        Open(sessions, cipher, SymOpType.AlgorithmChaining, (uint)CipherAlgorithm.AesCbc, aes, 2, HashMode.Auth, 4, 32, mac, ChainOrder.HashThenCipher);
        Open(sessions, VirtioCryptoSpec.HashCreateSession, SymOpType.None, 0, [], 0, HashMode.None, 4, 32);
        Open(sessions, VirtioCryptoSpec.MacCreateSession, SymOpType.None, 0, [], 0, HashMode.None, 2, 20, mac);
        Open(sessions, VirtioCryptoSpec.AeadCreateSession, SymOpType.None, (uint)AeadAlgorithm.Gcm, aes, 1, HashMode.None, 0, 16);
        Open(sessions, VirtioCryptoSpec.AeadCreateSession, SymOpType.None, (uint)AeadAlgorithm.Ccm, aes, 1, HashMode.None, 0, 8);
        Open(sessions, VirtioCryptoSpec.AeadCreateSession, SymOpType.None, (uint)AeadAlgorithm.ChaCha20Poly1305, chacha, 1, HashMode.None, 0, 16);
        Open(sessions, cipher, SymOpType.Cipher, (uint)CipherAlgorithm.AesCbc, aes, 1);
        sessions.Close(12);
        // 13: RSA-1024 private key, PKCS#1 v1.5 with SHA-256 (one key per process: what it is does not steer the checks)
        using (var rsa = System.Security.Cryptography.RSA.Create(1024))
        {
            var p = new byte[SessionMessage.LargeSize];
            BinaryPrimitives.WriteUInt64LittleEndian(p, VirtioCryptoSpec.AkcipherCreateSession);
            var der = rsa.ExportRSAPrivateKey();
            BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(8), (uint)AkcipherAlgorithm.Rsa);
            BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(12), (uint)AkcipherKeyType.Private);
            BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(16), (uint)der.Length);
            BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(20), (uint)RsaPadding.Pkcs1);
            BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(24), (uint)RsaHash.Sha256);
            der.CopyTo(p, 40);
            if (sessions.CreateAsym(SessionMessage.ReadAsym(p), out var error) != 13) throw new InvalidOperationException($"fuzz RSA session refused: {error}");
        }
        return new CryptoRequestProcessor(sessions, 0, variant == 1 ? 64 : 4096, 256, Stats, Log.Logger);
    }

    /// <summary>Opens a session through the 8.1 layout's parser, as a front-end's message would.</summary>
    private static void Open(CryptoSessions sessions, uint op, SymOpType type, uint alg, byte[] key, byte direction,
        HashMode mode = HashMode.None, uint hash = 0, uint result = 0, byte[]? authKey = null, ChainOrder order = ChainOrder.None)
    {
        var p = new byte[SessionMessage.LargeSize];
        BinaryPrimitives.WriteUInt64LittleEndian(p, op);
        BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(8), alg);
        BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(12), (uint)key.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(16), hash);
        BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(20), result);
        BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(24), (uint)(authKey?.Length ?? 0));
        p[32] = (byte)type;
        p[33] = direction;
        p[34] = (byte)mode;
        p[35] = (byte)order;
        key.CopyTo(p, 56);
        authKey?.CopyTo(p, 120);
        var info = SessionMessage.Read(p, SessionLayout.Qemu81);
        if (sessions.Create(info, out var error) <= 0) throw new InvalidOperationException($"fuzz session refused: {error}");
    }

    private readonly struct Server(CryptoRequestProcessor processor) : IChainServer
    {
        public bool Serve(in DescriptorChain chain, BufferSegment[] segments, out uint written)
        {
            ChainTarget.Touch(chain, segments);
            written = processor.Process(chain, segments);
            if (written > chain.WritableBytes)
                throw new InvalidOperationException($"used length {written} beyond the chain's {chain.WritableBytes} writable bytes");
            if (written > 0)
            {
                var last = segments[chain.SegmentStart + chain.SegmentCount - 1].Window;
                byte status = last.Span(last.Length - 1, 1)[0];
                if (status > (byte)CryptoStatus.KeyRejected) throw new InvalidOperationException($"status byte {status}");
            }
            return true;
        }
    }
}

/// <summary>
/// Target (h): CREATE_CRYPTO_SESSION payloads. The first byte picks the size (632, 1072, or the byte times 8), the
/// rest is the payload; it goes through the layout check, the parser and session creation, and the session is closed.
/// An id must be positive or a negative virtio status.
/// </summary>
internal static class CryptoSessionTarget
{
    private static readonly CryptoSessions Sessions = new(16);

    public static void Run(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty) return;
        int size = data[0] switch { 0 => SessionMessage.SmallSize, 1 => SessionMessage.LargeSize, var b => b * 8 };
        var p = new byte[size];
        data[1..Math.Min(data.Length, size + 1)].CopyTo(p);
        if (SessionMessage.Identify(p, out _) is not { } layout) return;
        long id;
        if (layout == SessionLayout.Qemu81 && SessionMessage.LargeOpCode(p) == VirtioCryptoSpec.AkcipherCreateSession)
            id = Sessions.CreateAsym(SessionMessage.ReadAsym(p), out _);
        else if (layout == SessionLayout.Qemu81 && !SessionMessage.IsSymCreate(SessionMessage.LargeOpCode(p)))
            return;
        else
            id = Sessions.Create(SessionMessage.Read(p, layout), out _);
        if (id == 0 || id < -(long)CryptoStatus.KeyRejected) throw new InvalidOperationException($"session id {id}");
        if (id > 0 && !Sessions.Close((ulong)id)) throw new InvalidOperationException($"session {id} could not be closed");
    }
}
