using System.Buffers.Binary;
using System.Security.Cryptography;
using Vhost.Protocol;

namespace Vhost.Crypto.Tests;

/// <summary>What the data path costs the GC, measured on the thread that serves the ring.</summary>
public sealed class CryptoAllocationTests : IDisposable
{
    private readonly CryptoHarness _h = new();

    public void Dispose() => _h.Dispose();

    private long Allocated => _h.Crypto.Workers(_h.Device)[0].ServiceAllocatedBytes;

    private long PerRequest(Func<CryptoResult> request, int n = 64)
    {
        for (int i = 0; i < 16; i++) Assert.Equal(CryptoStatus.Ok, request().Code);
        // a garbage collection near a window (the driver's own garbage, or another test's; the serving thread adds its
        // count after the used element the driver waits for) moves the count by what its allocation context had left.
        // An allocation per request shows in every window: the least of up to ten windows is what a request costs
        long least = long.MaxValue;
        for (int attempt = 0; attempt < 10 && least > 0; attempt++)
        {
            int gcs = GC.CollectionCount(0);
            long before = Allocated;
            for (int i = 0; i < n; i++) Assert.Equal(CryptoStatus.Ok, request().Code);
            long per = (Allocated - before) / n;
            if (GC.CollectionCount(0) == gcs || attempt == 9) least = Math.Min(least, per);
        }
        return least;
    }

    private long Session(CipherAlgorithm alg, byte[] key, bool encrypt) => _h.CreateSession(SymParams.Cipher(alg, key, encrypt));

    private long Session(uint opCode, uint alg, byte[] key, uint resultLen, bool mac = false) =>
        _h.CreateSession(SessionLayout.Qemu81, new SymParams
        {
            OpCode = opCode, OpType = SymOpType.None, Direction = 0, HashResultLen = resultLen,
            CipherAlg = opCode == VirtioCryptoSpec.AeadCreateSession ? alg : 0, Key = opCode == VirtioCryptoSpec.AeadCreateSession ? key : [],
            HashAlg = opCode == VirtioCryptoSpec.AeadCreateSession ? 0 : alg, AuthKey = mac ? key : [],
        });

    public static TheoryData<string> Algorithms =>
    [
        "aes-cbc-encrypt", "aes-cbc-decrypt", "aes-ecb", "3des-cbc", "3des-ecb", "aes-cbc+hmac-sha256",
        "sha1", "sha256", "sha384", "sha512", "hmac-sha1", "hmac-sha256", "hmac-sha384", "hmac-sha512",
        "aes-gcm-encrypt", "aes-gcm-decrypt", "aes-ccm-encrypt", "aes-ccm-decrypt", "chacha20-poly1305-encrypt", "chacha20-poly1305-decrypt",
        "rsa-encrypt", "rsa-decrypt", "rsa-sign", "rsa-verify",
    ];

    [Theory]
    [MemberData(nameof(Algorithms))]
    public void EveryAlgorithmAllocatesNothingPerRequest(string algorithm)
    {
        var data = new byte[4096];
        Random.Shared.NextBytes(data);
        var key32 = new byte[32];
        Random.Shared.NextBytes(key32);
        var nonce = Vectors.GcmIv;
        var aad = Vectors.GcmAad;
        Func<CryptoResult> request = algorithm switch
        {
            "aes-cbc-encrypt" => Cipher(Session(CipherAlgorithm.AesCbc, Vectors.AesKey128, true), true, Vectors.AesIv, data),
            "aes-cbc-decrypt" => Cipher(Session(CipherAlgorithm.AesCbc, Vectors.AesKey256, false), false, Vectors.AesIv, data),
            "aes-ecb" => Cipher(Session(CipherAlgorithm.AesEcb, Vectors.AesKey128, true), true, [], data),
            "3des-cbc" => Cipher(Session(CipherAlgorithm.TripleDesCbc, Vectors.DesKey, true), true, new byte[8], data),
            "3des-ecb" => Cipher(Session(CipherAlgorithm.TripleDesEcb, Vectors.DesKey, false), false, [], data),
            "aes-cbc+hmac-sha256" => Chain(data),
            "sha1" => Digest(Session(VirtioCryptoSpec.HashCreateSession, (uint)HashAlgorithm.Sha1, [], 20), false, data, 20),
            "sha256" => Digest(Session(VirtioCryptoSpec.HashCreateSession, (uint)HashAlgorithm.Sha256, [], 32), false, data, 32),
            "sha384" => Digest(Session(VirtioCryptoSpec.HashCreateSession, (uint)HashAlgorithm.Sha384, [], 48), false, data, 48),
            "sha512" => Digest(Session(VirtioCryptoSpec.HashCreateSession, (uint)HashAlgorithm.Sha512, [], 64), false, data, 64),
            "hmac-sha1" => Digest(Session(VirtioCryptoSpec.MacCreateSession, (uint)MacAlgorithm.HmacSha1, Vectors.Jefe, 20, mac: true), true, data, 20),
            "hmac-sha256" => Digest(Session(VirtioCryptoSpec.MacCreateSession, (uint)MacAlgorithm.HmacSha256, Vectors.Jefe, 32, mac: true), true, data, 32),
            "hmac-sha384" => Digest(Session(VirtioCryptoSpec.MacCreateSession, (uint)MacAlgorithm.HmacSha384, Vectors.Jefe, 48, mac: true), true, data, 48),
            "hmac-sha512" => Digest(Session(VirtioCryptoSpec.MacCreateSession, (uint)MacAlgorithm.HmacSha512, Vectors.Jefe, 64, mac: true), true, data, 64),
            "aes-gcm-encrypt" => Aead(AeadAlgorithm.Gcm, Vectors.GcmKey, 16, true, nonce, aad, data),
            "aes-gcm-decrypt" => Aead(AeadAlgorithm.Gcm, Vectors.GcmKey, 16, false, nonce, aad, data),
            "aes-ccm-encrypt" => Aead(AeadAlgorithm.Ccm, Vectors.CcmKey, 8, true, Vectors.CcmNonce, aad, data),
            "aes-ccm-decrypt" => Aead(AeadAlgorithm.Ccm, Vectors.CcmKey, 8, false, Vectors.CcmNonce, aad, data),
            "chacha20-poly1305-encrypt" => Aead(AeadAlgorithm.ChaCha20Poly1305, key32, 16, true, nonce, aad, data),
            "chacha20-poly1305-decrypt" => Aead(AeadAlgorithm.ChaCha20Poly1305, key32, 16, false, nonce, aad, data),
            _ when algorithm.StartsWith("rsa-", StringComparison.Ordinal) => Rsa(algorithm[4..]),
            _ => throw new ArgumentException(algorithm),
        };
        Assert.Equal(0, PerRequest(request));
    }

    private Func<CryptoResult> Cipher(long id, bool encrypt, byte[] iv, byte[] data)
    {
        Assert.True(id > 0);
        return () => _h.Cipher(id, encrypt, iv, data);
    }

    private Func<CryptoResult> Digest(long id, bool mac, byte[] data, int resultLen)
    {
        Assert.True(id > 0);
        return () => _h.Digest(id, mac, data, resultLen);
    }

    private Func<CryptoResult> Chain(byte[] data)
    {
        long id = _h.CreateSession(SessionLayout.Qemu71, new SymParams
        {
            OpType = SymOpType.AlgorithmChaining, CipherAlg = (uint)CipherAlgorithm.AesCbc, Key = Vectors.AesKey128, Direction = 1,
            HashMode = HashMode.Auth, HashAlg = (uint)MacAlgorithm.HmacSha256, HashResultLen = 32, AuthKey = Vectors.Jefe, Order = ChainOrder.CipherThenHash,
        });
        Assert.True(id > 0);
        uint n = (uint)data.Length;
        var req = CryptoHarness.Request(VirtioCryptoSpec.CipherEncrypt, id, [16, n, n, 0, n, 0, n, 0, 32], (uint)SymOpType.AlgorithmChaining);
        return () => _h.Submit(req, data.Length + 32, Vectors.AesIv, data);
    }

    /// <summary>Decryption needs a valid tag: the request decrypts what one encryption of the same session produced.</summary>
    private Func<CryptoResult> Aead(AeadAlgorithm alg, byte[] key, int tag, bool encrypt, byte[] nonce, byte[] aad, byte[] data)
    {
        long id = Session(VirtioCryptoSpec.AeadCreateSession, (uint)alg, key, (uint)tag);
        Assert.True(id > 0);
        if (encrypt) return () => _h.Aead(id, true, nonce, aad, data, tag);
        var sealedData = _h.Aead(id, true, nonce, aad, data, tag);
        Assert.Equal(CryptoStatus.Ok, sealedData.Code);
        return () => _h.Aead(id, false, nonce, aad, sealedData.Output, tag);
    }

    /// <summary>RSA PKCS#1 v1.5 with SHA-256 (8.1 layout): the BCL's Try* span calls allocate nothing either.</summary>
    private Func<CryptoResult> Rsa(string op)
    {
        using var key = RSA.Create(1024);
        long pub = RsaSession(key.ExportRSAPublicKey(), AkcipherKeyType.Public), priv = RsaSession(key.ExportRSAPrivateKey(), AkcipherKeyType.Private);
        Assert.True(pub > 0 && priv > 0);
        var message = "attack at dawn"u8.ToArray();
        var digest = SHA256.HashData(message);
        var ct = key.Encrypt(message, RSAEncryptionPadding.Pkcs1);
        var sig = key.SignHash(digest, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        CryptoResult Op(uint opcode, long id, byte[] src, int dst) => _h.Submit(CryptoHarness.Request(opcode, id, [(uint)src.Length, (uint)dst]), dst, src);
        return op switch
        {
            "encrypt" => () => Op(VirtioCryptoSpec.AkcipherEncrypt, pub, message, 128),
            "decrypt" => () => Op(VirtioCryptoSpec.AkcipherDecrypt, priv, ct, 128),
            "sign" => () => Op(VirtioCryptoSpec.AkcipherSign, priv, digest, 128),
            // verify: signature and digest both device-readable, only the status written
            _ => () => _h.Submit(CryptoHarness.Request(VirtioCryptoSpec.AkcipherVerify, pub, [(uint)sig.Length, (uint)digest.Length]), 0, sig, digest),
        };
    }

    private long RsaSession(byte[] der, AkcipherKeyType type)
    {
        var p = new byte[1072];
        BinaryPrimitives.WriteUInt64LittleEndian(p, VirtioCryptoSpec.AkcipherCreateSession);
        BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(8), (uint)AkcipherAlgorithm.Rsa);
        BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(12), (uint)type);
        BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(16), (uint)der.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(20), (uint)RsaPadding.Pkcs1);
        BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(24), (uint)RsaHash.Sha256);
        der.CopyTo(p, 40);
        _h.Fe.Send(VhostUserRequest.CreateCryptoSession, p);
        return SessionPayload.SessionId(SessionLayout.Qemu81, _h.Fe.ExpectReply(VhostUserRequest.CreateCryptoSession, 1072, CryptoHarness.T).Payload);
    }
}
