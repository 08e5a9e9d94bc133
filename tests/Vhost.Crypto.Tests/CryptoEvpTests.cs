using System.Security.Cryptography;
using Vhost.Crypto.Interop;

namespace Vhost.Crypto.Tests;

/// <summary>The OpenSSL EVP contexts (block ciphers, AES-CCM) against .NET's own implementations, and their life with the session.</summary>
public sealed class CryptoEvpTests : IDisposable
{
    private readonly CryptoHarness _h = new();
    private readonly Random _random = new(25);

    public void Dispose() => _h.Dispose();

    private byte[] Bytes(int n)
    {
        var b = new byte[n];
        _random.NextBytes(b);
        return b;
    }

    public static TheoryData<CipherAlgorithm, int> BlockCiphers => new()
    {
        { CipherAlgorithm.AesCbc, 16 }, { CipherAlgorithm.AesCbc, 24 }, { CipherAlgorithm.AesCbc, 32 },
        { CipherAlgorithm.AesEcb, 16 }, { CipherAlgorithm.AesEcb, 24 }, { CipherAlgorithm.AesEcb, 32 },
        { CipherAlgorithm.TripleDesCbc, 16 }, { CipherAlgorithm.TripleDesCbc, 24 },
        { CipherAlgorithm.TripleDesEcb, 16 }, { CipherAlgorithm.TripleDesEcb, 24 },
    };

    [Theory]
    [MemberData(nameof(BlockCiphers))]
    public void BlockCiphersGiveTheBclsBytesRequestAfterRequest(CipherAlgorithm alg, int keyLength)
    {
        bool aes = alg is CipherAlgorithm.AesCbc or CipherAlgorithm.AesEcb;
        bool cbc = alg is CipherAlgorithm.AesCbc or CipherAlgorithm.TripleDesCbc;
        int block = aes ? 16 : 8;
        var key = Bytes(keyLength);
        using SymmetricAlgorithm reference = aes ? System.Security.Cryptography.Aes.Create() : TripleDES.Create();
        // .NET 10 on OpenSSL 3 refuses a 16-byte 3DES key at the first call; two-key 3DES is the 24-byte key K1 K2 K1
        reference.Key = !aes && keyLength == 16 ? Vectors.Concat(key, key[..8]) : key;
        long enc = _h.CreateSession(SymParams.Cipher(alg, key, encrypt: true));
        long dec = _h.CreateSession(SymParams.Cipher(alg, key, encrypt: false));
        Assert.True(enc > 0 && dec > 0);
        // one context serves every request: each must start from its own IV, whatever the previous one left
        foreach (int blocks in new[] { 1, 3, 0, 256, 2, 17 })
        {
            var iv = cbc ? Bytes(block) : [];
            var plain = Bytes(blocks * block);
            var expected = cbc ? reference.EncryptCbc(plain, iv, PaddingMode.None) : reference.EncryptEcb(plain, PaddingMode.None);
            var e = _h.Cipher(enc, true, iv, plain);
            Assert.Equal(CryptoStatus.Ok, e.Code);
            Assert.Equal(expected, e.Output);
            var d = _h.Cipher(dec, false, iv, expected);
            Assert.Equal(CryptoStatus.Ok, d.Code);
            Assert.Equal(plain, d.Output);
        }
    }

    [Fact]
    public void AesCcmGivesTheBclsBytesForEveryNonceTagAndLength()
    {
        foreach (int keyLength in new[] { 16, 24, 32 })
        {
            var key = Bytes(keyLength);
            using var reference = new AesCcm(key);
            foreach (int tagLength in new[] { 4, 8, 16 })
            {
                long id = _h.CreateSession(SessionLayout.Qemu81, new SymParams
                {
                    OpCode = VirtioCryptoSpec.AeadCreateSession, OpType = SymOpType.None, CipherAlg = (uint)AeadAlgorithm.Ccm, Key = key, HashResultLen = (uint)tagLength,
                });
                Assert.True(id > 0);
                for (int nonceLength = 7; nonceLength <= 13; nonceLength++)
                {
                    foreach (var (length, aadLength) in new[] { (0, 0), (1, 0), (23, 8), (0, 5), (1000, 100) })
                    {
                        var nonce = Bytes(nonceLength);
                        var aad = Bytes(aadLength);
                        var plain = Bytes(length);
                        var ct = new byte[length];
                        var tag = new byte[tagLength];
                        reference.Encrypt(nonce, plain, ct, tag, aad);
                        var e = _h.Aead(id, true, nonce, aad, plain, tagLength);
                        Assert.Equal(CryptoStatus.Ok, e.Code);
                        Assert.Equal(Vectors.Concat(ct, tag), e.Output);
                        var d = _h.Aead(id, false, nonce, aad, e.Output, tagLength);
                        Assert.Equal(CryptoStatus.Ok, d.Code);
                        Assert.Equal(plain, d.Output);
                    }
                }
            }
        }
    }

    [Fact]
    public void AesCcmTagMismatchIsBadMsgAndTheContextRecovers()
    {
        long id = _h.CreateSession(SessionLayout.Qemu81, new SymParams
        {
            OpCode = VirtioCryptoSpec.AeadCreateSession, OpType = SymOpType.None, CipherAlg = (uint)AeadAlgorithm.Ccm, Key = Vectors.CcmKey, HashResultLen = 8,
        });
        var bad = (byte[])Vectors.CcmCipherAndTag.Clone();
        bad[^1] ^= 1;
        var r = _h.Aead(id, false, Vectors.CcmNonce, Vectors.CcmAad, bad, 8);
        Assert.Equal(CryptoStatus.BadMsg, r.Code);
        // nothing decrypted reaches the guest
        Assert.All(r.Output, b => Assert.Equal(0xee, b));
        bad = (byte[])Vectors.CcmCipherAndTag.Clone();
        bad[0] ^= 1;
        Assert.Equal(CryptoStatus.BadMsg, _h.Aead(id, false, Vectors.CcmNonce, Vectors.CcmAad, bad, 8).Code);
        Assert.Equal(Vectors.CcmPlain, _h.Aead(id, false, Vectors.CcmNonce, Vectors.CcmAad, Vectors.CcmCipherAndTag, 8).Output);
        Assert.Equal(Vectors.CcmCipherAndTag, _h.Aead(id, true, Vectors.CcmNonce, Vectors.CcmAad, Vectors.CcmPlain, 8).Output);
        Assert.Equal(2, _h.Crypto.TotalStats().BadMessages);
    }

    [Fact]
    public void WeakTripleDesKeyIsRejected()
    {
        // K1 == K2: 3DES degenerates to single DES, which .NET refuses and OpenSSL would take
        var weak = Vectors.Concat(Vectors.DesKey[..8], Vectors.DesKey[..8], Vectors.DesKey[16..]);
        using var bcl = TripleDES.Create();
        Assert.Throws<CryptographicException>(() => bcl.Key = weak);
        Assert.Equal(-(long)CryptoStatus.KeyRejected, _h.CreateSession(SymParams.Cipher(CipherAlgorithm.TripleDesCbc, weak, encrypt: true)));
        _h.AssertStillServes();
    }

    [Fact]
    public void ANativeContextOutlivesACloseUntilItsLastRequestEnds()
    {
        var sessions = new CryptoSessions(4);
        var payload = SessionPayload.Build(SessionLayout.Qemu71, SymParams.Cipher(CipherAlgorithm.AesCbc, Vectors.AesKey128, encrypt: true));
        long id = sessions.Create(SessionMessage.Read(payload, SessionLayout.Qemu71), out var error);
        Assert.True(id > 0, error);
        // a request on another queue's thread holds the session while the connection thread closes it
        Assert.True(sessions.TryGet((ulong)id, out var inUse));
        Assert.True(sessions.Close((ulong)id));
        Assert.False(sessions.TryGet((ulong)id, out _));
        var cipher = inUse.Cipher!;
        Assert.False(cipher.IsDisposed);
        var dst = new byte[Vectors.AesPlain.Length];
        Assert.True(cipher.Transform(Vectors.AesIv, Vectors.AesPlain, dst));
        Assert.Equal(Vectors.AesCbc128Cipher, dst);
        inUse.Exit();
        Assert.True(cipher.IsDisposed);
    }
}
