using Vhost.Protocol;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;
using Vhost.Transport;

namespace Vhost.Crypto.Tests;

/// <summary>QEMU 7.2's cryptodev-vhost-user: SET_FEATURES with bit 30 only, no SET_VRING_ENABLE, a guest using event idx and indirect descriptors.</summary>
public sealed class CryptoQemu72Tests
{
    [Fact]
    public void ServedWithOnlyBit30AndNoVringEnable()
    {
        using var h = new CryptoHarness(qemu72: true);
        Assert.Equal(VirtioFeature.Bit(VirtioFeature.ProtocolFeatures), h.Device.Features);
        Assert.True(h.Device.Queue(0).Enabled);
        h.AssertStillServes();
    }

    [Fact]
    public void AGuestThatKicksByAvailEventKeepsBeingServed()
    {
        using var h = new CryptoHarness(qemu72: true);
        var ring = (DriverSplitRing)h.Ring;
        long id = h.CreateSession(SymParams.Cipher(CipherAlgorithm.AesCbc, Vectors.AesKey128, encrypt: true));
        var req = CryptoHarness.Request(VirtioCryptoSpec.CipherEncrypt, id, [16, 64, 64], (uint)SymOpType.Cipher);
        int kicks = 0;
        for (int i = 0; i < 6; i++)
        {
            ulong o = h.Alloc(64), s = h.Alloc(1);
            ushort old = ring.AvailIndex;
            ring.Add(new(h.Put(req), 72, false), new(h.Put(Vectors.AesIv), 16, false), new(h.Put(Vectors.AesPlain), 64, false),
                new(o, 64, true), new(s, 1, true));
            // Linux's virtqueue_kick_prepare with event idx: publish, full barrier, then vring_need_event(avail_event, new, old)
            Interlocked.MemoryBarrier();
            ushort ev = ring.AvailEvent, now = ring.AvailIndex;
            if ((ushort)(now - ev - 1) < (ushort)(now - old))
            {
                h.Setup[0].Kick();
                kicks++;
            }
            h.WaitUsed();
            Assert.Equal(0, h.Span(s, 1)[0]);
            Assert.Equal(Vectors.AesCbc128Cipher, h.Span(o, 64).ToArray());
        }
        // with avail_event never written the guest would have kicked once and waited forever for the second
        Assert.True(kicks >= 1);
    }

    [Fact]
    public void IndirectTablesAreFollowedWithoutTheFeature()
    {
        using var h = new CryptoHarness(qemu72: true);
        long id = h.CreateSession(SymParams.Cipher(CipherAlgorithm.AesCbc, Vectors.AesKey128, encrypt: true));
        var req = CryptoHarness.Request(VirtioCryptoSpec.CipherEncrypt, id, [16, 64, 64], (uint)SymOpType.Cipher);
        ulong o = h.Alloc(64), s = h.Alloc(1);
        h.Ring.AddIndirect(new(h.Put(req), 72, false), new(h.Put(Vectors.AesIv), 16, false), new(h.Put(Vectors.AesPlain), 64, false),
            new(o, 64, true), new(s, 1, true));
        h.Kick();
        h.WaitUsed();
        Assert.Equal(0, h.Span(s, 1)[0]);
        Assert.Equal(Vectors.AesCbc128Cipher, h.Span(o, 64).ToArray());
    }

    [Fact]
    public void PauseAndResumeKeepTheSessionsAndTheRingsPosition()
    {
        using var h = new CryptoHarness(qemu72: true);
        long id = h.CreateSession(SymParams.Cipher(CipherAlgorithm.AesCbc, Vectors.AesKey128, encrypt: true));
        for (int i = 0; i < 3; i++) Assert.Equal(CryptoStatus.Ok, h.Cipher(id, true, Vectors.AesIv, Vectors.AesPlain).Code);
        // QEMU's pause: GET_VRING_BASE; its resume: the same ring again from that base, no SET_VRING_ENABLE
        var q = h.Setup[0];
        uint b = h.Fe.GetVringBase(0);
        Assert.Equal(3u, b);
        Assert.False(h.Device.IsRunning);
        Assert.Equal(1, h.Crypto.OpenSessions(h.Device));
        h.Fe.SetVringNum(0, q.Size);
        h.Fe.SetVringBase(0, b);
        h.Fe.SetVringAddr(q.Address);
        h.Fe.SetVringCall(0, q.CallFd);
        h.Fe.SetVringKick(0, q.KickFd);
        h.Fe.GetFeatures();
        Assert.True(h.Device.IsRunning);
        var r = h.Cipher(id, true, Vectors.AesIv, Vectors.AesPlain);
        Assert.Equal(CryptoStatus.Ok, r.Code);
        Assert.Equal(Vectors.AesCbc128Cipher, r.Output);
    }

    [Fact]
    public void OtherDeviceTypesKeepTheRules()
    {
        // the same set-up against a socket without the quirks: the ring waits for SET_VRING_ENABLE and never runs
        using var crypto = new VirtioCrypto();
        var o = crypto.CreateSocketOptions(TestFrontEndListener.TempPath());
        using var socket = new VhostUserSocket(new Device.VhostSocketOptions
        {
            Path = o.Path, Features = o.Features, ProtocolFeatures = o.ProtocolFeatures, MaxQueues = 1, Ops = crypto, CryptoSessions = crypto,
        });
        socket.Start();
        using var fe = TestFrontEnd.Connect(socket.Path, CryptoHarness.T);
        using var setup = DeviceSetup.Run(fe, new DeviceSetupOptions
        {
            QueueCount = 1, QueueSize = 64, Features = VirtioFeature.Bit(VirtioFeature.ProtocolFeatures), EnableQueues = false,
        });
        // a request with a reply comes after the set-up's last message has been handled
        fe.GetFeatures();
        var dev = socket.Devices[0];
        Assert.False(dev.Queue(0).Enabled);
        Assert.False(dev.IsRunning);
        Assert.Equal(Rings.RingQuirks.None, dev.Queue(0).Quirks);
        Assert.False(dev.Queue(0).IndirectAllowed);
    }
}
