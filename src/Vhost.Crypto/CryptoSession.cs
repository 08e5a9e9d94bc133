using System.Security.Cryptography;
using Vhost.Crypto.Interop;

namespace Vhost.Crypto;

/// <summary>What a session does with a data request.</summary>
internal enum SessionKind
{
    Cipher,
    Chain,
    Hash,
    Mac,
    Aead,
    Akcipher,
}

/// <summary>
/// One session: the .NET objects and OpenSSL contexts made once at CREATE_CRYPTO_SESSION, used by every request of the session. A session
/// may be closed while a request on another queue's thread uses it: the objects (and native contexts) are disposed when the last user leaves.
/// </summary>
internal sealed class CryptoSession
{
    private int _users;
    private volatile bool _closed;
    private int _disposed;

    public CryptoSession(long id, SessionKind kind) { Id = id; Kind = kind; }

    public long Id { get; }
    public SessionKind Kind { get; }

    // an EVP context (and the BCL's AEAD objects) serve one call at a time: requests of a session take turns
    public readonly Lock Gate = new();

    // cipher (Cipher, Chain)
    public CipherAlgorithm CipherAlg;
    public EvpBlockCipher? Cipher;
    public bool Cbc;
    public int BlockSize;
    public bool Encrypt;

    // hash or mac (Chain, Hash, Mac)
    public HashAlgorithm HashAlg;
    public byte[]? MacKey;
    public int DigestSize;
    public int ResultLen;
    public ChainOrder Order;

    // aead
    public AeadAlgorithm AeadAlg;
    public AesGcm? Gcm;
    public EvpCcm? Ccm;
    public ChaCha20Poly1305? ChaCha;
    public int TagLen;

    // akcipher (RSA with PKCS#1 v1.5 padding)
    public RSA? Rsa;
    public bool PrivateKey;
    public HashAlgorithmName RsaHash;
    public int RsaHashSize;

    /// <summary>A request starts using the session; false once it was closed.</summary>
    public bool TryEnter()
    {
        Interlocked.Increment(ref _users);
        if (!_closed) return true;
        Exit();
        return false;
    }

    public void Exit()
    {
        if (Interlocked.Decrement(ref _users) == 0 && _closed) DisposeOnce();
    }

    /// <summary>CLOSE_CRYPTO_SESSION or the device's end: no new request gets it; the objects go with the last user.</summary>
    public void Close()
    {
        _closed = true;
        Interlocked.Increment(ref _users);
        Exit();
    }

    private void DisposeOnce()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Cipher?.Dispose();
        Gcm?.Dispose();
        Ccm?.Dispose();
        ChaCha?.Dispose();
        Rsa?.Dispose();
        if (MacKey != null) CryptographicOperations.ZeroMemory(MacKey);
    }

    /// <summary>Computes the digest or MAC of <paramref name="data"/> into <paramref name="result"/> (at least <see cref="DigestSize"/> bytes).</summary>
    public void Digest(ReadOnlySpan<byte> data, Span<byte> result)
    {
        _ = (HashAlg, MacKey) switch
        {
            (HashAlgorithm.Md5, null) => MD5.HashData(data, result),
            (HashAlgorithm.Sha1, null) => SHA1.HashData(data, result),
            (HashAlgorithm.Sha256, null) => SHA256.HashData(data, result),
            (HashAlgorithm.Sha384, null) => SHA384.HashData(data, result),
            (HashAlgorithm.Sha512, null) => SHA512.HashData(data, result),
            (HashAlgorithm.Md5, { } k) => HMACMD5.HashData(k, data, result),
            (HashAlgorithm.Sha1, { } k) => HMACSHA1.HashData(k, data, result),
            (HashAlgorithm.Sha256, { } k) => HMACSHA256.HashData(k, data, result),
            (HashAlgorithm.Sha384, { } k) => HMACSHA384.HashData(k, data, result),
            (HashAlgorithm.Sha512, { } k) => HMACSHA512.HashData(k, data, result),
            _ => throw new InvalidOperationException($"hash {HashAlg} was accepted at session creation"),
        };
    }

    public static int DigestSizeOf(HashAlgorithm alg) => alg switch
    {
        HashAlgorithm.Md5 => 16,
        HashAlgorithm.Sha1 => 20,
        HashAlgorithm.Sha256 => 32,
        HashAlgorithm.Sha384 => 48,
        HashAlgorithm.Sha512 => 64,
        _ => 0,
    };
}
