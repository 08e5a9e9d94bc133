using System.Buffers.Binary;
using System.Security.Cryptography;
using Vhost.Protocol;

namespace Vhost.Crypto.Tests;

/// <summary>RSA akcipher sessions of the 8.1 layout (PKCS#1 DER keys) and their requests: encrypt, decrypt, sign, verify.</summary>
public sealed class CryptoRsaTests : IDisposable
{
    private readonly CryptoHarness _h = new();
    // QEMU's message holds keys of up to 1024 bytes: a 2048-bit private key's DER (about 1190 bytes) does not fit
    private readonly RSA _key = RSA.Create(1024);

    public void Dispose()
    {
        _h.Dispose();
        _key.Dispose();
    }

    private long Session(AkcipherKeyType type, RsaHash hash = RsaHash.None, RsaPadding padding = RsaPadding.Pkcs1, byte[]? der = null)
    {
        der ??= type == AkcipherKeyType.Private ? _key.ExportRSAPrivateKey() : _key.ExportRSAPublicKey();
        var p = new byte[1072];
        BinaryPrimitives.WriteUInt64LittleEndian(p, VirtioCryptoSpec.AkcipherCreateSession);
        BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(8), (uint)AkcipherAlgorithm.Rsa);
        BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(12), (uint)type);
        BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(16), (uint)der.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(20), (uint)padding);
        BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(24), (uint)hash);
        der.CopyTo(p, 40);
        _h.Fe.Send(VhostUserRequest.CreateCryptoSession, p);
        var reply = _h.Fe.ExpectReply(VhostUserRequest.CreateCryptoSession, 1072, CryptoHarness.T);
        return SessionPayload.SessionId(SessionLayout.Qemu81, reply.Payload);
    }

    private CryptoResult Op(uint opcode, long session, byte[] src, int dst) =>
        _h.Submit(CryptoHarness.Request(opcode, session, [(uint)src.Length, (uint)dst]), dst, src);

    [Fact]
    public void EncryptWithThePublicKeyDecryptWithThePrivate()
    {
        long pub = Session(AkcipherKeyType.Public), priv = Session(AkcipherKeyType.Private);
        Assert.True(pub > 0 && priv > 0);
        var message = "attack at dawn"u8.ToArray();
        var e = Op(VirtioCryptoSpec.AkcipherEncrypt, pub, message, 128);
        Assert.Equal(CryptoStatus.Ok, e.Code);
        // the device's ciphertext opens with the key held here, and the device opens it too
        Assert.Equal(message, _key.Decrypt(e.Output, RSAEncryptionPadding.Pkcs1));
        var d = Op(VirtioCryptoSpec.AkcipherDecrypt, priv, e.Output, 128);
        Assert.Equal(CryptoStatus.Ok, d.Code);
        Assert.Equal(message, d.Output[..message.Length]);
        Assert.All(d.Output[message.Length..], b => Assert.Equal(0, b));
    }

    [Fact]
    public void SignMatchesPkcs1AndVerifies()
    {
        long priv = Session(AkcipherKeyType.Private, RsaHash.Sha256), pub = Session(AkcipherKeyType.Public, RsaHash.Sha256);
        var digest = SHA256.HashData("abc"u8);
        var s = Op(VirtioCryptoSpec.AkcipherSign, priv, digest, 128);
        Assert.Equal(CryptoStatus.Ok, s.Code);
        // PKCS#1 v1.5 signatures are deterministic
        Assert.Equal(_key.SignHash(digest, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1), s.Output);
        var verify = CryptoHarness.Request(VirtioCryptoSpec.AkcipherVerify, pub, [128, 32]);
        Assert.Equal(CryptoStatus.Ok, _h.Submit(verify, 0, s.Output, digest).Code);
        var wrong = (byte[])digest.Clone();
        wrong[0] ^= 1;
        Assert.Equal(CryptoStatus.BadMsg, _h.Submit(verify, 0, s.Output, wrong).Code);
    }

    [Fact]
    public void RefusedSessionsAndRequests()
    {
        Assert.Equal(-(long)CryptoStatus.NotSupp, Session(AkcipherKeyType.Public, padding: RsaPadding.Raw));
        Assert.Equal(-(long)CryptoStatus.NotSupp, Session(AkcipherKeyType.Public, hash: RsaHash.Md2));
        Assert.Equal(-(long)CryptoStatus.KeyRejected, Session(AkcipherKeyType.Private, der: [0x30, 0x03, 0x02, 0x01, 0x00]));
        long pub = Session(AkcipherKeyType.Public, RsaHash.Sha256);
        // a public key cannot sign; a destination shorter than the key is refused
        Assert.Equal(CryptoStatus.Err, Op(VirtioCryptoSpec.AkcipherSign, pub, new byte[32], 128).Code);
        Assert.Equal(CryptoStatus.Err, Op(VirtioCryptoSpec.AkcipherEncrypt, pub, new byte[16], 100).Code);
        Assert.Equal(CryptoStatus.Err, Op(VirtioCryptoSpec.AkcipherEncrypt, pub, new byte[200], 128).Code);
        _h.AssertStillServes();
    }
}
