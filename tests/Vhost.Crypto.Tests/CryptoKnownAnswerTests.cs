using System.Security.Cryptography;

namespace Vhost.Crypto.Tests;

/// <summary>Every supported algorithm against published vectors, through the ring with the C# test front-end.</summary>
public sealed class CryptoKnownAnswerTests : IDisposable
{
    private readonly CryptoHarness _h = new();

    public void Dispose() => _h.Dispose();

    [Theory]
    [InlineData(CipherAlgorithm.AesCbc, false)]
    [InlineData(CipherAlgorithm.AesCbc, true)]
    [InlineData(CipherAlgorithm.AesEcb, false)]
    public void Aes(CipherAlgorithm alg, bool key256)
    {
        var key = key256 ? Vectors.AesKey256 : Vectors.AesKey128;
        var expected = alg == CipherAlgorithm.AesEcb ? Vectors.AesEcb128Cipher : key256 ? Vectors.AesCbc256Cipher : Vectors.AesCbc128Cipher;
        long enc = _h.CreateSession(SymParams.Cipher(alg, key, encrypt: true));
        long dec = _h.CreateSession(SymParams.Cipher(alg, key, encrypt: false));
        Assert.True(enc > 0 && dec > 0 && enc != dec);
        var iv = alg == CipherAlgorithm.AesEcb ? [] : Vectors.AesIv;
        var e = _h.Cipher(enc, true, iv, Vectors.AesPlain);
        Assert.Equal(CryptoStatus.Ok, e.Code);
        Assert.Equal(expected, e.Output);
        Assert.Equal((uint)Vectors.AesPlain.Length + 1, e.Used);
        var d = _h.Cipher(dec, false, iv, expected);
        Assert.Equal(CryptoStatus.Ok, d.Code);
        Assert.Equal(Vectors.AesPlain, d.Output);
    }

    [Fact]
    public void TripleDes()
    {
        long ecb = _h.CreateSession(SymParams.Cipher(CipherAlgorithm.TripleDesEcb, Vectors.DesKey, encrypt: true));
        var e = _h.Cipher(ecb, true, [], Vectors.DesPlain);
        Assert.Equal(CryptoStatus.Ok, e.Code);
        Assert.Equal(Vectors.DesEcbCipher, e.Output);
        // CBC with a zero IV: the first block is ECB's; the rest must decrypt back
        long cbc = _h.CreateSession(SymParams.Cipher(CipherAlgorithm.TripleDesCbc, Vectors.DesKey, encrypt: true));
        long cbcDec = _h.CreateSession(SymParams.Cipher(CipherAlgorithm.TripleDesCbc, Vectors.DesKey, encrypt: false));
        var c = _h.Cipher(cbc, true, new byte[8], Vectors.DesPlain);
        Assert.Equal(CryptoStatus.Ok, c.Code);
        Assert.Equal(Vectors.DesEcbCipher[..8], c.Output[..8]);
        Assert.NotEqual(Vectors.DesEcbCipher[8..], c.Output[8..]);
        var p = _h.Cipher(cbcDec, false, new byte[8], c.Output);
        Assert.Equal(Vectors.DesPlain, p.Output);
    }

    public static TheoryData<HashAlgorithm, byte[]> Hashes => new()
    {
        { HashAlgorithm.Sha1, Vectors.Sha1Abc },
        { HashAlgorithm.Sha256, Vectors.Sha256Abc },
        { HashAlgorithm.Sha384, Vectors.Sha384Abc },
        { HashAlgorithm.Sha512, Vectors.Sha512Abc },
    };

    [Theory]
    [MemberData(nameof(Hashes))]
    public void Hash(HashAlgorithm alg, byte[] expected)
    {
        long id = _h.CreateSession(SessionLayout.Qemu81, new SymParams
        {
            OpCode = VirtioCryptoSpec.HashCreateSession, OpType = SymOpType.None, HashAlg = (uint)alg, HashResultLen = (uint)expected.Length, Direction = 0,
        });
        Assert.True(id > 0);
        var r = _h.Digest(id, mac: false, Vectors.Abc, expected.Length);
        Assert.Equal(CryptoStatus.Ok, r.Code);
        Assert.Equal(expected, r.Output);
    }

    public static TheoryData<MacAlgorithm, byte[]> Macs => new()
    {
        { MacAlgorithm.HmacSha1, Vectors.HmacSha1Jefe },
        { MacAlgorithm.HmacSha256, Vectors.HmacSha256Jefe },
        { MacAlgorithm.HmacSha384, Vectors.HmacSha384Jefe },
        { MacAlgorithm.HmacSha512, Vectors.HmacSha512Jefe },
    };

    [Theory]
    [MemberData(nameof(Macs))]
    public void Mac(MacAlgorithm alg, byte[] expected)
    {
        long id = _h.CreateSession(SessionLayout.Qemu70, new SymParams
        {
            OpCode = VirtioCryptoSpec.MacCreateSession, OpType = SymOpType.None, HashAlg = (uint)alg, HashResultLen = (uint)expected.Length,
            AuthKey = Vectors.Jefe, Direction = 0,
        });
        Assert.True(id > 0);
        var r = _h.Digest(id, mac: true, Vectors.WhatDoYaWant, expected.Length);
        Assert.Equal(CryptoStatus.Ok, r.Code);
        Assert.Equal(expected, r.Output);
        // a truncated result is the digest's first bytes
        var t = _h.Digest(id, mac: true, Vectors.WhatDoYaWant, 12);
        Assert.Equal(expected[..12], t.Output);
    }

    [Theory]
    [InlineData(ChainOrder.CipherThenHash)]
    [InlineData(ChainOrder.HashThenCipher)]
    public void ChainCbcHmacSha256(ChainOrder order)
    {
        long id = _h.CreateSession(SessionLayout.Qemu71, new SymParams
        {
            OpType = SymOpType.AlgorithmChaining, CipherAlg = (uint)CipherAlgorithm.AesCbc, Key = Vectors.AesKey128, Direction = 1,
            HashMode = HashMode.Auth, HashAlg = (uint)MacAlgorithm.HmacSha256, HashResultLen = 32, AuthKey = Vectors.Jefe, Order = order,
        });
        Assert.True(id > 0);
        // 8 bytes of clear header, then the four NIST blocks ciphered; the whole buffer authenticated
        var header = Vectors.H("0011223344556677");
        var src = Vectors.Concat(header, Vectors.AesPlain);
        uint n = (uint)src.Length;
        var req = CryptoHarness.Request(VirtioCryptoSpec.CipherEncrypt, id, [16, n, n, 8, 64, 0, n, 0, 32], (uint)SymOpType.AlgorithmChaining);
        var r = _h.Submit(req, src.Length + 32, Vectors.AesIv, src);
        Assert.Equal(CryptoStatus.Ok, r.Code);
        var dst = r.Output[..src.Length];
        Assert.Equal(header, dst[..8]);
        Assert.Equal(Vectors.AesCbc128Cipher, dst[8..]);
        var mac = HMACSHA256.HashData(Vectors.Jefe, order == ChainOrder.CipherThenHash ? dst : src);
        Assert.Equal(mac, r.Output[src.Length..]);
    }

    [Fact]
    public void AesGcm()
    {
        long id = _h.CreateSession(SessionLayout.Qemu81, new SymParams
        {
            OpCode = VirtioCryptoSpec.AeadCreateSession, OpType = SymOpType.None, CipherAlg = (uint)AeadAlgorithm.Gcm, Key = Vectors.GcmKey,
            HashResultLen = 16, AadLen = (uint)Vectors.GcmAad.Length,
        });
        Assert.True(id > 0);
        var e = _h.Aead(id, true, Vectors.GcmIv, Vectors.GcmAad, Vectors.GcmPlain, 16);
        Assert.Equal(CryptoStatus.Ok, e.Code);
        Assert.Equal(Vectors.Concat(Vectors.GcmCipher, Vectors.GcmTag), e.Output);
        var d = _h.Aead(id, false, Vectors.GcmIv, Vectors.GcmAad, e.Output, 16);
        Assert.Equal(CryptoStatus.Ok, d.Code);
        Assert.Equal(Vectors.GcmPlain, d.Output);
        // one flipped bit of the tag: BADMSG, nothing decrypted
        var bad = (byte[])e.Output.Clone();
        bad[^1] ^= 1;
        Assert.Equal(CryptoStatus.BadMsg, _h.Aead(id, false, Vectors.GcmIv, Vectors.GcmAad, bad, 16).Code);
    }

    [Fact]
    public void AesCcm()
    {
        long id = _h.CreateSession(SessionLayout.Qemu81, new SymParams
        {
            OpCode = VirtioCryptoSpec.AeadCreateSession, OpType = SymOpType.None, CipherAlg = (uint)AeadAlgorithm.Ccm, Key = Vectors.CcmKey, HashResultLen = 8,
        });
        var e = _h.Aead(id, true, Vectors.CcmNonce, Vectors.CcmAad, Vectors.CcmPlain, 8);
        Assert.Equal(CryptoStatus.Ok, e.Code);
        Assert.Equal(Vectors.CcmCipherAndTag, e.Output);
        var d = _h.Aead(id, false, Vectors.CcmNonce, Vectors.CcmAad, Vectors.CcmCipherAndTag, 8);
        Assert.Equal(Vectors.CcmPlain, d.Output);
    }

    [Fact]
    public void ChaCha20Poly1305()
    {
        Assert.True(System.Security.Cryptography.ChaCha20Poly1305.IsSupported);
        long id = _h.CreateSession(SessionLayout.Qemu81, new SymParams
        {
            OpCode = VirtioCryptoSpec.AeadCreateSession, OpType = SymOpType.None, CipherAlg = (uint)AeadAlgorithm.ChaCha20Poly1305, Key = Vectors.ChaChaKey, HashResultLen = 16,
        });
        var e = _h.Aead(id, true, Vectors.ChaChaNonce, Vectors.ChaChaAad, Vectors.ChaChaPlain, 16);
        Assert.Equal(CryptoStatus.Ok, e.Code);
        Assert.Equal(Vectors.Concat(Vectors.ChaChaCipher, Vectors.ChaChaTag), e.Output);
        var d = _h.Aead(id, false, Vectors.ChaChaNonce, Vectors.ChaChaAad, e.Output, 16);
        Assert.Equal(Vectors.ChaChaPlain, d.Output);
    }

    [Fact]
    public void SegmentedBuffersAndIndirect()
    {
        // source split over three descriptors, destination over two, all through an indirect table
        long id = _h.CreateSession(SymParams.Cipher(CipherAlgorithm.AesCbc, Vectors.AesKey128, encrypt: true));
        var req = CryptoHarness.Request(VirtioCryptoSpec.CipherEncrypt, id, [16, 64, 64], (uint)SymOpType.Cipher);
        var p = Vectors.AesPlain;
        ulong o1 = _h.Alloc(24), o2 = _h.Alloc(40), s = _h.Alloc(1);
        ushort head = _h.Ring.AddIndirect(
            new(_h.Put(req), 72, false), new(_h.Put(Vectors.AesIv), 16, false),
            new(_h.Put(p[..5]), 5, false), new(_h.Put(p[5..40]), 35, false), new(_h.Put(p[40..]), 24, false),
            new(o1, 24, true), new(o2, 40, true), new(s, 1, true));
        _h.Kick();
        var u = _h.WaitUsed();
        Assert.Equal(head, u.Id);
        Assert.Equal(0, _h.Span(s, 1)[0]);
        Assert.Equal(Vectors.AesCbc128Cipher, Vectors.Concat(_h.Span(o1, 24).ToArray(), _h.Span(o2, 40).ToArray()));
    }
}
