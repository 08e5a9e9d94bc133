using System.Buffers.Binary;
using Vhost.Protocol;

namespace Vhost.Crypto.Tests;

/// <summary>CREATE/CLOSE_CRYPTO_SESSION in QEMU's three layouts, and the life of sessions.</summary>
public sealed class CryptoSessionTests : IDisposable
{
    private readonly CryptoHarness _h = new();

    public void Dispose() => _h.Dispose();

    [Theory]
    [InlineData(SessionLayout.Qemu70, CipherAlgorithm.AesCbc)]
    [InlineData(SessionLayout.Qemu70, CipherAlgorithm.AesEcb)]
    [InlineData(SessionLayout.Qemu71, CipherAlgorithm.AesCbc)]
    [InlineData(SessionLayout.Qemu71, CipherAlgorithm.AesEcb)]
    [InlineData(SessionLayout.Qemu81, CipherAlgorithm.AesCbc)]
    [InlineData(SessionLayout.Qemu81, CipherAlgorithm.AesEcb)]
    public void EveryLayoutMakesAWorkingSession(SessionLayout layout, CipherAlgorithm alg)
    {
        // AES-ECB is 2, as CIPHER_CREATE_SESSION's op_code is: the layouts must still be told apart
        var payload = SessionPayload.Build(layout, SymParams.Cipher(alg, Vectors.AesKey128, encrypt: true));
        _h.Fe.Send(VhostUserRequest.CreateCryptoSession, payload);
        var reply = _h.Fe.ExpectReply(VhostUserRequest.CreateCryptoSession, payload.Length, CryptoHarness.T);
        long id = SessionPayload.SessionId(layout, reply.Payload);
        Assert.True(id > 0, $"session id {id}");
        var r = _h.Cipher(id, true, alg == CipherAlgorithm.AesEcb ? [] : Vectors.AesIv, Vectors.AesPlain);
        Assert.Equal(CryptoStatus.Ok, r.Code);
        Assert.Equal(alg == CipherAlgorithm.AesEcb ? Vectors.AesEcb128Cipher : Vectors.AesCbc128Cipher, r.Output);
        Assert.Equal(1, _h.Crypto.OpenSessions(_h.Device));
    }

    [Theory]
    [InlineData(SessionLayout.Qemu70)]
    [InlineData(SessionLayout.Qemu71)]
    [InlineData(SessionLayout.Qemu81)]
    public void UnsupportedAlgorithmGetsANegativeIdAndTheDeviceCarriesOn(SessionLayout layout)
    {
        long id = _h.CreateSession(layout, SymParams.Cipher(CipherAlgorithm.AesXts, new byte[32], encrypt: true));
        Assert.Equal(-(long)CryptoStatus.NotSupp, id);
        Assert.True(_h.Logged("AesXts is not supported"));
        _h.AssertStillServes();
    }

    [Fact]
    public void AkcipherSessionOfAnUnknownAlgorithmIsRefusedWithNotSupp()
    {
        var payload = new byte[1072];
        BinaryPrimitives.WriteUInt64LittleEndian(payload, VirtioCryptoSpec.AkcipherCreateSession);
        BinaryPrimitives.WriteUInt32LittleEndian(payload.AsSpan(8), (uint)AkcipherAlgorithm.Ecdsa);
        _h.Fe.Send(VhostUserRequest.CreateCryptoSession, payload);
        var reply = _h.Fe.ExpectReply(VhostUserRequest.CreateCryptoSession, 1072, CryptoHarness.T);
        Assert.Equal(-(long)CryptoStatus.NotSupp, SessionPayload.SessionId(SessionLayout.Qemu81, reply.Payload));
        _h.AssertStillServes();
    }

    [Theory]
    [InlineData(100)]
    [InlineData(633)]
    [InlineData(2000)]
    [InlineData(0)]
    public void PayloadOfNoLayoutGetsAFailedSessionAndTheDeviceCarriesOn(int size)
    {
        var payload = new byte[size];
        new Random(size).NextBytes(payload);
        _h.Fe.Send(VhostUserRequest.CreateCryptoSession, payload);
        // what QEMU checks: the same request, its size, a negative id where a layout keeps it
        var reply = _h.Fe.ExpectReply(VhostUserRequest.CreateCryptoSession, size, CryptoHarness.T);
        if (size >= 8) Assert.Equal(-(long)CryptoStatus.Err, BinaryPrimitives.ReadInt64LittleEndian(reply.Payload));
        if (size > 632) Assert.Equal(-(long)CryptoStatus.Err, BinaryPrimitives.ReadInt64LittleEndian(reply.Payload.AsSpan(size - 8)));
        Assert.Single(_h.Logs.Lines, l => l.Text.Contains("fits no session layout", StringComparison.Ordinal));
        Assert.Equal(0, _h.Crypto.OpenSessions(_h.Device));
        _h.AssertStillServes();
    }

    [Fact]
    public void NonsenseIn632BytesGetsAFailedSessionAsQemu72ReadsIt()
    {
        var payload = new byte[632];
        new Random(7).NextBytes(payload);
        _h.Fe.Send(VhostUserRequest.CreateCryptoSession, payload);
        var reply = _h.Fe.ExpectReply(VhostUserRequest.CreateCryptoSession, 632, CryptoHarness.T);
        Assert.Equal(-(long)CryptoStatus.Err, SessionPayload.SessionId(SessionLayout.Qemu71, reply.Payload));
        Assert.Single(_h.Logs.Lines, l => l.Text.Contains("CREATE_CRYPTO_SESSION of 632 bytes refused with Err: 632-byte payload is no sensible session", StringComparison.Ordinal));
        _h.AssertStillServes();
    }

    [Fact]
    public void ClosedSessionIdIsNeverServedAgainNorReused()
    {
        long id = _h.CreateSession(SymParams.Cipher(CipherAlgorithm.AesCbc, Vectors.AesKey128, encrypt: true));
        Assert.Equal(CryptoStatus.Ok, _h.Cipher(id, true, Vectors.AesIv, Vectors.AesPlain).Code);
        _h.CloseSession(id);
        Assert.Equal(0, _h.Crypto.OpenSessions(_h.Device));
        Assert.Equal(CryptoStatus.InvSess, _h.Cipher(id, true, Vectors.AesIv, Vectors.AesPlain).Code);
        long next = _h.CreateSession(SymParams.Cipher(CipherAlgorithm.AesCbc, Vectors.AesKey128, encrypt: true));
        Assert.NotEqual(id, next);
        Assert.Equal(CryptoStatus.InvSess, _h.Cipher(id, true, Vectors.AesIv, Vectors.AesPlain).Code);
        // closing it twice is logged, nothing more
        _h.CloseSession(id);
        Assert.True(_h.Logged("no such session"));
        _h.AssertStillServes();
    }

    [Fact]
    public void SessionsSurviveARingStopAndGoWithTheConnection()
    {
        long id = _h.CreateSession(SymParams.Cipher(CipherAlgorithm.AesCbc, Vectors.AesKey128, encrypt: true));
        var closed = new ManualResetEventSlim();
        _h.Device.Closed.Register(closed.Set);
        // QEMU stops the ring on pause (GET_VRING_BASE) and starts it again on resume
        Assert.Equal(CryptoStatus.Ok, _h.Cipher(id, true, Vectors.AesIv, Vectors.AesPlain).Code);
        Assert.Equal(1u, _h.Setup.StopQueue(0));
        Assert.Equal(1, _h.Crypto.OpenSessions(_h.Device));
        _h.Fe.Shutdown();
        Assert.True(closed.Wait(CryptoHarness.T));
        // Closed's callbacks run last-registered first: the device's own one (which drops the sessions) may still run
        Assert.True(_h.Logs.WaitFor("1 session(s) dropped with the connection", timeout: CryptoHarness.T));
        Assert.Equal(0, _h.Crypto.OpenSessions(_h.Device));
    }

    [Fact]
    public void SessionMessagesNeedTheProtocolFeature()
    {
        // a front-end that did not negotiate CRYPTO_SESSION: refused (no reply is possible, so the connection closes)
        using var h = new CryptoHarness(sessionFeature: false);
        h.Fe.Send(VhostUserRequest.CreateCryptoSession, SessionPayload.Build(SessionLayout.Qemu71,
            SymParams.Cipher(CipherAlgorithm.AesCbc, Vectors.AesKey128, encrypt: true)));
        Assert.True(h.Fe.IsClosedByPeer(CryptoHarness.T));
    }
}
