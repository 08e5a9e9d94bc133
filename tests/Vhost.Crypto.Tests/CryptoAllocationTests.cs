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
        // a garbage collection during the run (the driver's own garbage, or another test's) moves the serving
        // thread's count by what its allocation context had left: such a run is measured again
        for (int attempt = 0; ; attempt++)
        {
            int gcs = GC.CollectionCount(0);
            long before = Allocated;
            for (int i = 0; i < n; i++) Assert.Equal(CryptoStatus.Ok, request().Code);
            long per = (Allocated - before) / n;
            if (GC.CollectionCount(0) == gcs || attempt == 9) return per;
        }
    }

    [Fact]
    public void AeadHashAndMacRequestsAllocateNothing()
    {
        long gcm = _h.CreateSession(SessionLayout.Qemu81, new SymParams
        {
            OpCode = VirtioCryptoSpec.AeadCreateSession, OpType = SymOpType.None, CipherAlg = (uint)AeadAlgorithm.Gcm, Key = Vectors.GcmKey, HashResultLen = 16,
        });
        long mac = _h.CreateSession(SessionLayout.Qemu81, new SymParams
        {
            OpCode = VirtioCryptoSpec.MacCreateSession, OpType = SymOpType.None, HashAlg = (uint)MacAlgorithm.HmacSha256, HashResultLen = 32, AuthKey = Vectors.Jefe,
        });
        var data = new byte[4096];
        Assert.Equal(0, PerRequest(() => _h.Aead(gcm, true, Vectors.GcmIv, Vectors.GcmAad, data, 16)));
        Assert.Equal(0, PerRequest(() => _h.Digest(mac, true, data, 32)));
    }

    [Fact]
    public void AesCbcAllocatesOnlyTheBclsCipherObject()
    {
        // Aes.EncryptCbc makes a small native-cipher wrapper per call (64 bytes with .NET 10 on Linux); nothing else may allocate
        long id = _h.CreateSession(SymParams.Cipher(CipherAlgorithm.AesCbc, Vectors.AesKey128, encrypt: true));
        var data = new byte[4096];
        long per = PerRequest(() => _h.Cipher(id, true, Vectors.AesIv, data));
        Assert.InRange(per, 0, 96);
    }
}
