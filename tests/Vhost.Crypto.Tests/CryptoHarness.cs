using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using Vhost.Device;
using Vhost.Protocol;
using Vhost.Testing.BackEnd;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;
using Vhost.Transport;

namespace Vhost.Crypto.Tests;

/// <summary>One request's result: status byte, the used length, and what the device wrote.</summary>
internal readonly record struct CryptoResult(byte Status, uint Used, byte[] Output)
{
    public CryptoStatus Code => (CryptoStatus)Status;
}

/// <summary>A VirtioCrypto served on a socket and brought up by the test front-end (normally, or as QEMU 7.2 does it).</summary>
internal sealed class CryptoHarness : IDisposable
{
    public static readonly TimeSpan T = TimeSpan.FromSeconds(10);

    public readonly VirtioCrypto Crypto;
    public readonly CapturingLoggerProvider Logs = new();
    public readonly VhostUserSocket Socket;
    public readonly TestFrontEnd Fe;
    public readonly DeviceSetup Setup;
    public readonly VhostDevice Device;
    public readonly DriverRing Ring;
    private readonly ILoggerFactory _lf;
    private readonly ManualResetEventSlim _started = new();

    public CryptoHarness(bool qemu72 = false, bool packed = false, int maxData = 1 << 20, bool sessionFeature = true)
    {
        _lf = LoggerFactory.Create(b => b.AddProvider(Logs).SetMinimumLevel(LogLevel.Debug));
        Crypto = new VirtioCrypto(new VirtioCryptoOptions { LoggerFactory = _lf, MaxDataLength = maxData });
        Crypto.Started += _ => _started.Set();
        Socket = new VhostUserSocket(Crypto.CreateSocketOptions(TestFrontEndListener.TempPath()));
        Socket.Start();
        Fe = TestFrontEnd.Connect(Socket.Path, T);
        Setup = DeviceSetup.Run(Fe, new DeviceSetupOptions
        {
            Packed = packed,
            QueueCount = 1,
            QueueSize = 128,
            ProtocolFeatures = DeviceSetupOptions.DefaultProtocolFeatures | (sessionFeature ? 1UL << (int)ProtocolFeature.CryptoSession : 0),
            // QEMU 7.2's cryptodev-vhost-user: SET_FEATURES with VHOST_USER_F_PROTOCOL_FEATURES only, and no SET_VRING_ENABLE
            Features = qemu72 ? VirtioFeature.Bit(VirtioFeature.ProtocolFeatures)
                : ~(VirtioFeature.Bit(VirtioFeature.LogAll) | VirtioFeature.Bit(VirtioFeature.AccessPlatform) | (packed ? 0 : VirtioFeature.Bit(VirtioFeature.RingPacked))),
            EnableQueues = !qemu72,
        });
        if (!_started.Wait(T)) throw new TimeoutException("the crypto device never started");
        Device = Socket.Devices[0];
        Ring = DriverRing.Create(Setup[0], Setup.Memory);
    }

    public FrontEndMemory Memory => Setup.Memory;

    public ulong Alloc(int size) => Memory.Allocate((ulong)Math.Max(size, 1), 64);

    public Span<byte> Span(ulong gpa, int size) => Memory.Span(gpa, size);

    public ulong Put(ReadOnlySpan<byte> data)
    {
        ulong gpa = Alloc(data.Length);
        data.CopyTo(Span(gpa, data.Length));
        return gpa;
    }

    /// <summary>Sends CREATE_CRYPTO_SESSION and returns the id of the reply (negative: refused).</summary>
    public long CreateSession(SessionLayout layout, SymParams p)
    {
        var payload = SessionPayload.Build(layout, p);
        Fe.Send(VhostUserRequest.CreateCryptoSession, payload);
        var reply = Fe.ExpectReply(VhostUserRequest.CreateCryptoSession, payload.Length, T);
        return SessionPayload.SessionId(layout, reply.Payload);
    }

    public long CreateSession(SymParams p) => CreateSession(SessionLayout.Qemu71, p);

    public void CloseSession(long id)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(b, id);
        Fe.Send(VhostUserRequest.CloseCryptoSession, b);
        // the close has no reply: a request with one shows it was handled
        Fe.GetFeatures();
    }

    /// <summary>Adds the chain, kicks, and waits (on the call eventfd) for its used element.</summary>
    public UsedElement Run(params ReadOnlySpan<DriverBuffer> chain)
    {
        ushort id = Ring.Add(chain);
        Kick();
        var u = WaitUsed();
        Assert.Equal(id, u.Id);
        return u;
    }

    /// <summary>Asks for an interrupt at the next used element (as a driver with event idx does), then kicks.</summary>
    public void Kick()
    {
        if (Ring is DriverSplitRing split) split.SetUsedEvent(split.UsedIndex);
        Setup[0].Kick();
    }

    public UsedElement WaitUsed()
    {
        while (true)
        {
            if (Ring.TryGetUsed(out var u)) return u;
            if (!Setup[0].WaitCall(T)) throw new TimeoutException("no used element");
            Setup[0].ConsumeCalls();
        }
    }

    /// <summary>A 72-byte data request header with the given union fields (offset from 24, little-endian u32s) and op_type.</summary>
    public static byte[] Request(uint opcode, long session, uint[] fields, uint opType = 0)
    {
        var r = new byte[72];
        BinaryPrimitives.WriteUInt32LittleEndian(r, opcode);
        BinaryPrimitives.WriteInt64LittleEndian(r.AsSpan(8), session);
        for (int i = 0; i < fields.Length; i++) BinaryPrimitives.WriteUInt32LittleEndian(r.AsSpan(24 + 4 * i), fields[i]);
        if (opType != 0) BinaryPrimitives.WriteUInt32LittleEndian(r.AsSpan(64), opType);
        return r;
    }

    /// <summary>Runs a request of readable parts and a writable area of <paramref name="outLength"/> bytes plus the status byte.</summary>
    public CryptoResult Submit(byte[] request, int outLength, params byte[][] readable)
    {
        var chain = new List<DriverBuffer> { new(Put(request), (uint)request.Length, false) };
        foreach (var r in readable) if (r.Length > 0) chain.Add(new DriverBuffer(Put(r), (uint)r.Length, false));
        ulong o = 0;
        if (outLength > 0)
        {
            o = Alloc(outLength);
            Span(o, outLength).Fill(0xee);
            chain.Add(new DriverBuffer(o, (uint)outLength, true));
        }
        ulong s = Alloc(1);
        Span(s, 1)[0] = 0xff;
        chain.Add(new DriverBuffer(s, 1, true));
        var u = Run([.. chain]);
        return new CryptoResult(Span(s, 1)[0], u.Length, outLength > 0 ? Span(o, outLength).ToArray() : []);
    }

    public CryptoResult Cipher(long session, bool encrypt, byte[] iv, byte[] src) =>
        Submit(Request(encrypt ? VirtioCryptoSpec.CipherEncrypt : VirtioCryptoSpec.CipherDecrypt, session,
            [(uint)iv.Length, (uint)src.Length, (uint)src.Length], (uint)SymOpType.Cipher), src.Length, iv, src);

    public CryptoResult Digest(long session, bool mac, byte[] src, int resultLen) =>
        Submit(Request(mac ? VirtioCryptoSpec.Mac : VirtioCryptoSpec.Hash, session, [(uint)src.Length, (uint)resultLen]), resultLen, src);

    public CryptoResult Aead(long session, bool encrypt, byte[] nonce, byte[] aad, byte[] src, int tagLen)
    {
        int dst = encrypt ? src.Length + tagLen : src.Length - tagLen;
        return Submit(Request(encrypt ? VirtioCryptoSpec.AeadEncrypt : VirtioCryptoSpec.AeadDecrypt, session,
            [(uint)nonce.Length, (uint)aad.Length, (uint)src.Length, (uint)dst, (uint)tagLen]), dst, nonce, aad, src);
    }

    /// <summary>The device still serves: an AES-128-CBC known answer through a fresh session.</summary>
    public void AssertStillServes()
    {
        long id = CreateSession(SymParams.Cipher(CipherAlgorithm.AesCbc, Vectors.AesKey128, encrypt: true));
        Assert.True(id > 0);
        var r = Cipher(id, true, Vectors.AesIv, Vectors.AesPlain);
        Assert.Equal(CryptoStatus.Ok, r.Code);
        Assert.Equal(Vectors.AesCbc128Cipher, r.Output);
        Assert.Null(Device.FaultReason);
    }

    public bool Logged(string text) => Logs.Lines.Any(l => l.Text.Contains(text, StringComparison.Ordinal));

    public void Dispose()
    {
        Setup.Dispose();
        Fe.Dispose();
        Socket.Dispose();
        Crypto.Dispose();
        _lf.Dispose();
        _started.Dispose();
    }
}
