using Vhost.Testing.Rings;

namespace Vhost.Crypto.Tests;

/// <summary>Requests a hostile or broken guest sends: each fails with a status and one log line, and the device keeps serving.</summary>
public sealed class CryptoHostileTests : IDisposable
{
    private readonly CryptoHarness _h = new(maxData: 64 << 10);
    private readonly long _session;

    public CryptoHostileTests() =>
        _session = _h.CreateSession(SymParams.Cipher(CipherAlgorithm.AesCbc, Vectors.AesKey128, encrypt: true));

    public void Dispose() => _h.Dispose();

    private byte[] CbcRequest(uint iv, uint src, uint dst) =>
        CryptoHarness.Request(VirtioCryptoSpec.CipherEncrypt, _session, [iv, src, dst], (uint)Crypto.SymOpType.Cipher);

    [Fact]
    public void SourceLongerThanTheChain()
    {
        var r = _h.Submit(CbcRequest(16, 128, 128), 128, Vectors.AesIv, Vectors.AesPlain);
        Assert.Equal(CryptoStatus.Err, r.Code);
        Assert.True(_h.Logged("run past the readable descriptors"));
        Assert.All(r.Output, b => Assert.Equal(0xee, b));
        _h.AssertStillServes();
    }

    [Fact]
    public void DestinationLongerThanTheChain()
    {
        var r = _h.Submit(CbcRequest(16, 64, 4096), 64, Vectors.AesIv, Vectors.AesPlain);
        Assert.Equal(CryptoStatus.Err, r.Code);
        Assert.True(_h.Logged("run past the writable descriptors"));
        _h.AssertStillServes();
    }

    [Theory]
    [InlineData(0xffff_ffffu, 64u)]
    [InlineData(16u, 0xffff_ffffu)]
    [InlineData(16u, 0x8000_0000u)]
    public void FourGigabyteLengths(uint iv, uint src)
    {
        var r = _h.Submit(CbcRequest(iv, src, src), 64, Vectors.AesIv, Vectors.AesPlain);
        Assert.Equal(CryptoStatus.Err, r.Code);
        _h.AssertStillServes();
    }

    [Fact]
    public void LengthsThatWrapIn32Bits()
    {
        // iv + src wraps to 64 in 32 bits
        var r = _h.Submit(CbcRequest(0xffff_ffd0, 0x70, 64), 64, Vectors.AesIv, Vectors.AesPlain);
        Assert.Equal(CryptoStatus.Err, r.Code);
        _h.AssertStillServes();
    }

    [Fact]
    public void AboveTheAdvertisedLimit()
    {
        var big = new byte[128 << 10];
        var r = _h.Submit(CbcRequest(16, (uint)big.Length, (uint)big.Length), big.Length, Vectors.AesIv, big);
        Assert.Equal(CryptoStatus.Err, r.Code);
        Assert.True(_h.Logged("at most 65536"));
        _h.AssertStillServes();
    }

    [Fact]
    public void MissingStatusDescriptor()
    {
        var req = CbcRequest(16, 64, 64);
        var u = _h.Run(new DriverBuffer(_h.Put(req), 72, false), new DriverBuffer(_h.Put(Vectors.AesIv), 16, false),
            new DriverBuffer(_h.Put(Vectors.AesPlain), 64, false));
        Assert.Equal(0u, u.Length);
        Assert.True(_h.Logged("no device-writable status byte"));
        _h.AssertStillServes();
    }

    [Fact]
    public void ReadOnlyStatusDescriptor()
    {
        ulong s = _h.Put([0xff]);
        var u = _h.Run(new DriverBuffer(_h.Put(CbcRequest(16, 64, 64)), 72, false), new DriverBuffer(_h.Put(Vectors.AesIv), 16, false),
            new DriverBuffer(_h.Put(Vectors.AesPlain), 64, false), new DriverBuffer(s, 1, false));
        Assert.Equal(0u, u.Length);
        Assert.Equal(0xff, _h.Span(s, 1)[0]);
        _h.AssertStillServes();
    }

    [Fact]
    public void ShortRequestHeader()
    {
        ulong s = _h.Alloc(1);
        _h.Run(new DriverBuffer(_h.Put(new byte[40]), 40, false), new DriverBuffer(s, 1, true));
        Assert.Equal((byte)CryptoStatus.Err, _h.Span(s, 1)[0]);
        _h.AssertStillServes();
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(12345L)]
    [InlineData(-1L)]
    public void UnknownSession(long id)
    {
        var req = CryptoHarness.Request(VirtioCryptoSpec.CipherEncrypt, id, [16, 64, 64], (uint)Crypto.SymOpType.Cipher);
        Assert.Equal(CryptoStatus.InvSess, _h.Submit(req, 64, Vectors.AesIv, Vectors.AesPlain).Code);
        Assert.True(_h.Logged("which is not open"));
        _h.AssertStillServes();
    }

    [Fact]
    public void UnknownOpcodeAndWrongService()
    {
        var unknown = CryptoHarness.Request(VirtioCryptoSpec.Opcode(5, 0), _session, [16, 64, 64]);
        Assert.Equal(CryptoStatus.NotSupp, _h.Submit(unknown, 64, Vectors.AesIv, Vectors.AesPlain).Code);
        // an akcipher request naming a cipher session
        var akcipher = CryptoHarness.Request(VirtioCryptoSpec.AkcipherEncrypt, _session, [64, 64]);
        Assert.Equal(CryptoStatus.Err, _h.Submit(akcipher, 64, Vectors.AesPlain).Code);
        // a hash request naming a cipher session
        var hash = CryptoHarness.Request(VirtioCryptoSpec.Hash, _session, [64, 32]);
        Assert.Equal(CryptoStatus.Err, _h.Submit(hash, 32, Vectors.AesPlain).Code);
        _h.AssertStillServes();
    }

    [Fact]
    public void PartialBlocksAndWrongIv()
    {
        Assert.Equal(CryptoStatus.Err, _h.Submit(CbcRequest(16, 60, 60), 60, Vectors.AesIv, Vectors.AesPlain[..60]).Code);
        Assert.Equal(CryptoStatus.Err, _h.Submit(CbcRequest(8, 64, 64), 64, Vectors.AesIv[..8], Vectors.AesPlain).Code);
        Assert.Equal(CryptoStatus.Err, _h.Submit(CbcRequest(16, 64, 32), 64, Vectors.AesIv, Vectors.AesPlain).Code);
        _h.AssertStillServes();
    }

    [Fact]
    public void SourceAndDestinationOnTheSamePages()
    {
        // the guest points the writable buffer at its own source: the result is still the right ciphertext
        ulong req = _h.Put(CbcRequest(16, 64, 64)), iv = _h.Put(Vectors.AesIv), data = _h.Put(Vectors.AesPlain), s = _h.Alloc(1);
        _h.Run(new DriverBuffer(req, 72, false), new DriverBuffer(iv, 16, false), new DriverBuffer(data, 64, false),
            new DriverBuffer(data, 64, true), new DriverBuffer(s, 1, true));
        Assert.Equal(0, _h.Span(s, 1)[0]);
        Assert.Equal(Vectors.AesCbc128Cipher, _h.Span(data, 64).ToArray());
    }

    [Fact]
    public void ChainRangesOutsideTheSource()
    {
        long id = _h.CreateSession(new SymParams
        {
            OpType = Crypto.SymOpType.AlgorithmChaining, CipherAlg = (uint)CipherAlgorithm.AesCbc, Key = Vectors.AesKey128, Direction = 1,
            HashMode = Crypto.HashMode.Plain, HashAlg = (uint)HashAlgorithm.Sha256, HashResultLen = 32, Order = Crypto.ChainOrder.CipherThenHash,
        });
        var req = CryptoHarness.Request(VirtioCryptoSpec.CipherEncrypt, id, [16, 64, 64, 16, 64, 0, 64, 0, 32], (uint)Crypto.SymOpType.AlgorithmChaining);
        Assert.Equal(CryptoStatus.Err, _h.Submit(req, 96, Vectors.AesIv, Vectors.AesPlain).Code);
        var wrap = CryptoHarness.Request(VirtioCryptoSpec.CipherEncrypt, id, [16, 64, 64, 0, 64, 0xffff_fff0, 0x20, 0, 32], (uint)Crypto.SymOpType.AlgorithmChaining);
        Assert.Equal(CryptoStatus.Err, _h.Submit(wrap, 96, Vectors.AesIv, Vectors.AesPlain).Code);
        Assert.True(_h.Logged("outside the source"));
        _h.AssertStillServes();
    }

    [Fact]
    public void ManyBadRequestsLogABoundedNumberOfLines()
    {
        for (int i = 0; i < 150; i++) _h.Submit(CbcRequest(16, 128, 128), 128, Vectors.AesIv, Vectors.AesPlain);
        int lines = _h.Logs.Lines.Count(l => l.Text.Contains("run past the readable", StringComparison.Ordinal));
        Assert.Equal(100, lines);
        Assert.Equal(150, _h.Crypto.TotalStats().Failed);
        _h.AssertStillServes();
    }
}
