using System.Collections.Concurrent;
using System.Security.Cryptography;
using Vhost.Crypto.Interop;

namespace Vhost.Crypto;

/// <summary>
/// The sessions of one device: created and closed on the connection thread, looked up by the data path without a
/// lock. Ids are never reused, so a request naming a closed session gets INVSESS, not another guest's keys.
/// They live as long as the connection (a ring stop on pause keeps them; the close of the connection drops them).
/// </summary>
internal sealed class CryptoSessions
{
    private readonly ConcurrentDictionary<long, CryptoSession> _sessions = new();
    private readonly int _maxSessions;
    private long _nextId;

    public CryptoSessions(int maxSessions) => _maxSessions = maxSessions;

    public int Count => _sessions.Count;

    public bool TryGet(ulong id, out CryptoSession session)
    {
        if (id <= long.MaxValue && _sessions.TryGetValue((long)id, out var s) && s.TryEnter())
        {
            session = s;
            return true;
        }
        session = null!;
        return false;
    }

    /// <summary>Creates a session; returns its id, or a negative virtio status with the reason.</summary>
    public long Create(in SymSessionInfo info, out string? error)
    {
        if (_sessions.Count >= _maxSessions)
        {
            error = $"{_maxSessions} sessions already open";
            return -(long)CryptoStatus.NoSpc;
        }
        long id = Interlocked.Increment(ref _nextId);
        var status = Build(id, info, out var session, out error);
        if (status != CryptoStatus.Ok) return -(long)status;
        _sessions[id] = session!;
        return id;
    }

    /// <summary>Creates an akcipher (RSA) session; returns its id, or a negative virtio status with the reason.</summary>
    public long CreateAsym(in AsymSessionInfo info, out string? error)
    {
        if (_sessions.Count >= _maxSessions)
        {
            error = $"{_maxSessions} sessions already open";
            return -(long)CryptoStatus.NoSpc;
        }
        long id = Interlocked.Increment(ref _nextId);
        var status = BuildAsym(id, info, out var session, out error);
        if (status != CryptoStatus.Ok) return -(long)status;
        _sessions[id] = session!;
        return id;
    }

    private static CryptoStatus BuildAsym(long id, in AsymSessionInfo info, out CryptoSession? session, out string? error)
    {
        session = null;
        error = null;
        if ((AkcipherAlgorithm)info.Algorithm != AkcipherAlgorithm.Rsa) return NotSupp($"akcipher {(AkcipherAlgorithm)info.Algorithm}", out error);
        if ((RsaPadding)info.Padding != RsaPadding.Pkcs1) return NotSupp($"RSA padding {(RsaPadding)info.Padding}", out error);
        if (info.KeyType is not ((uint)AkcipherKeyType.Public or (uint)AkcipherKeyType.Private)) return Err($"key type {info.KeyType}", out error);
        if (info.KeyLen == 0 || info.KeyLen > SessionMessage.MaxAsymKey) return Err($"RSA key of {info.KeyLen} bytes", out error);
        (HashAlgorithmName name, int size) = (RsaHash)info.Hash switch
        {
            RsaHash.None => (default(HashAlgorithmName), 0),
            RsaHash.Sha1 => (HashAlgorithmName.SHA1, 20),
            RsaHash.Sha256 => (HashAlgorithmName.SHA256, 32),
            RsaHash.Sha384 => (HashAlgorithmName.SHA384, 48),
            RsaHash.Sha512 => (HashAlgorithmName.SHA512, 64),
            var h => (default(HashAlgorithmName), -1),
        };
        if (size < 0) return NotSupp($"RSA hash {(RsaHash)info.Hash}", out error);
        var rsa = RSA.Create();
        try
        {
            // virtio and Linux pass PKCS#1 DER: RSAPublicKey or RSAPrivateKey
            bool isPrivate = info.KeyType == (uint)AkcipherKeyType.Private;
            int read;
            if (isPrivate) rsa.ImportRSAPrivateKey(info.Key, out read);
            else rsa.ImportRSAPublicKey(info.Key, out read);
            if (read != info.Key.Length)
            {
                rsa.Dispose();
                error = $"{info.Key.Length - read} bytes after the DER key";
                return CryptoStatus.KeyRejected;
            }
            session = new CryptoSession(id, SessionKind.Akcipher) { Rsa = rsa, PrivateKey = isPrivate, RsaHash = name, RsaHashSize = size };
            return CryptoStatus.Ok;
        }
        catch (CryptographicException e)
        {
            rsa.Dispose();
            error = $"the RSA key was rejected: {e.Message}";
            return CryptoStatus.KeyRejected;
        }
    }

    public bool Close(ulong id)
    {
        if (id > long.MaxValue || !_sessions.TryRemove((long)id, out var s)) return false;
        s.Close();
        return true;
    }

    /// <summary>The connection is gone: every session goes.</summary>
    public void CloseAll()
    {
        foreach (var id in _sessions.Keys)
            if (_sessions.TryRemove(id, out var s)) s.Close();
    }

    private static CryptoStatus Build(long id, in SymSessionInfo info, out CryptoSession? session, out string? error)
    {
        session = null;
        error = null;
        if (info.KeyLen > SessionMessage.MaxCipherKey || info.AuthKeyLen > SessionMessage.MaxAuthKey)
        {
            error = $"key of {info.KeyLen} bytes or auth key of {info.AuthKeyLen} bytes beyond the message's arrays";
            return CryptoStatus.Err;
        }
        try
        {
            if (info.OpCode == VirtioCryptoSpec.CipherCreateSession)
            {
                if (info.OpType == SymOpType.Cipher)
                {
                    var s = new CryptoSession(id, SessionKind.Cipher);
                    var st = SetCipher(s, info, out error);
                    if (st == CryptoStatus.Ok) session = s;
                    return st;
                }
                if (info.OpType == SymOpType.AlgorithmChaining)
                {
                    var s = new CryptoSession(id, SessionKind.Chain);
                    if (info.ChainOrder is not (ChainOrder.HashThenCipher or ChainOrder.CipherThenHash))
                    {
                        error = $"chaining order {info.ChainOrder}";
                        return CryptoStatus.NotSupp;
                    }
                    s.Order = info.ChainOrder;
                    var st = SetCipher(s, info, out error);
                    if (st == CryptoStatus.Ok)
                    {
                        st = info.HashMode switch
                        {
                            HashMode.Plain => SetHash(s, info.HashAlg, info.HashResultLen, default, keyed: false, out error),
                            HashMode.Auth => SetHash(s, info.HashAlg, info.HashResultLen, info.AuthKey, keyed: true, out error),
                            _ => NotSupp($"hash mode {info.HashMode}", out error),
                        };
                    }
                    if (st == CryptoStatus.Ok) session = s;
                    else s.Close();
                    return st;
                }
                return NotSupp($"symmetric op type {info.OpType}", out error);
            }
            if (info.OpCode == VirtioCryptoSpec.HashCreateSession || info.OpCode == VirtioCryptoSpec.MacCreateSession)
            {
                bool mac = info.OpCode == VirtioCryptoSpec.MacCreateSession;
                var s = new CryptoSession(id, mac ? SessionKind.Mac : SessionKind.Hash);
                var st = SetHash(s, info.HashAlg, info.HashResultLen, info.AuthKey, mac, out error);
                if (st == CryptoStatus.Ok) session = s;
                return st;
            }
            if (info.OpCode == VirtioCryptoSpec.AeadCreateSession)
            {
                var s = new CryptoSession(id, SessionKind.Aead);
                var st = SetAead(s, info, out error);
                if (st == CryptoStatus.Ok) session = s;
                return st;
            }
            return NotSupp($"session op code 0x{info.OpCode:x}", out error);
        }
        catch (CryptographicException e)
        {
            // a weak or malformed key the platform refuses (a 3DES key with equal halves, say)
            error = $"the key was rejected: {e.Message}";
            return CryptoStatus.KeyRejected;
        }
    }

    private static CryptoStatus NotSupp(string what, out string? error)
    {
        error = $"{what} is not supported";
        return CryptoStatus.NotSupp;
    }

    private static CryptoStatus SetCipher(CryptoSession s, in SymSessionInfo info, out string? error)
    {
        error = null;
        var alg = (CipherAlgorithm)info.CipherAlg;
        s.CipherAlg = alg;
        s.Encrypt = info.Direction != 2;
        if (info.Direction is not (1 or 2)) return NotSupp($"cipher direction {info.Direction}", out error);
        switch (alg)
        {
            case CipherAlgorithm.AesEcb:
            case CipherAlgorithm.AesCbc:
                if (info.KeyLen is not (16 or 24 or 32)) return Err($"AES key of {info.KeyLen} bytes", out error);
                s.BlockSize = 16;
                break;
            case CipherAlgorithm.TripleDesEcb:
            case CipherAlgorithm.TripleDesCbc:
                if (info.KeyLen is not (16 or 24)) return Err($"3DES key of {info.KeyLen} bytes", out error);
                // OpenSSL takes any 3DES key; .NET (and so this device before it used EVP) refuses weak ones
                if (TripleDES.IsWeakKey(info.Key.ToArray()))
                {
                    error = "the key was rejected: a weak 3DES key";
                    return CryptoStatus.KeyRejected;
                }
                s.BlockSize = 8;
                break;
            default:
                return NotSupp($"cipher {alg}", out error);
        }
        s.Cbc = alg is CipherAlgorithm.AesCbc or CipherAlgorithm.TripleDesCbc;
        s.Cipher = EvpBlockCipher.Create(alg, info.Key, s.Encrypt, out error);
        return s.Cipher != null ? CryptoStatus.Ok : CryptoStatus.Err;
    }

    private static CryptoStatus SetHash(CryptoSession s, uint algorithm, uint resultLen, ReadOnlySpan<byte> key, bool keyed, out string? error)
    {
        error = null;
        // HMAC-x and hash x share their numbers (VIRTIO_CRYPTO_MAC_HMAC_SHA1 == VIRTIO_CRYPTO_HASH_SHA1 == 2, ...)
        var alg = (HashAlgorithm)algorithm;
        int size = algorithm <= (uint)HashAlgorithm.Sha512 ? CryptoSession.DigestSizeOf(alg) : 0;
        if (size == 0) return NotSupp(keyed ? $"MAC {(MacAlgorithm)algorithm}" : $"hash {alg}", out error);
        if (resultLen == 0 || resultLen > size) return Err($"result length {resultLen} for a {size}-byte digest", out error);
        s.HashAlg = alg;
        s.DigestSize = size;
        s.ResultLen = (int)resultLen;
        if (keyed) s.MacKey = key.ToArray();
        return CryptoStatus.Ok;
    }

    private static CryptoStatus SetAead(CryptoSession s, in SymSessionInfo info, out string? error)
    {
        error = null;
        var alg = (AeadAlgorithm)info.CipherAlg;
        s.AeadAlg = alg;
        s.Encrypt = info.Direction != 2;
        int tag = (int)info.HashResultLen;
        s.TagLen = tag;
        switch (alg)
        {
            case AeadAlgorithm.Gcm:
                if (info.KeyLen is not (16 or 24 or 32)) return Err($"AES-GCM key of {info.KeyLen} bytes", out error);
                if (tag is < 12 or > 16) return Err($"AES-GCM tag of {tag} bytes", out error);
                s.Gcm = new AesGcm(info.Key, tag);
                return CryptoStatus.Ok;
            case AeadAlgorithm.Ccm:
                if (info.KeyLen is not (16 or 24 or 32)) return Err($"AES-CCM key of {info.KeyLen} bytes", out error);
                if (tag is < 4 or > 16 || tag % 2 != 0) return Err($"AES-CCM tag of {tag} bytes", out error);
                s.Ccm = EvpCcm.Create(info.Key, out error);
                return s.Ccm != null ? CryptoStatus.Ok : CryptoStatus.Err;
            case AeadAlgorithm.ChaCha20Poly1305:
                if (info.KeyLen != 32) return Err($"ChaCha20-Poly1305 key of {info.KeyLen} bytes", out error);
                if (tag != 16) return Err($"ChaCha20-Poly1305 tag of {tag} bytes", out error);
                if (!ChaCha20Poly1305.IsSupported) return NotSupp("ChaCha20-Poly1305 on this platform", out error);
                s.ChaCha = new ChaCha20Poly1305(info.Key);
                return CryptoStatus.Ok;
            default:
                return NotSupp($"AEAD {alg}", out error);
        }
    }

    private static CryptoStatus Err(string what, out string? error)
    {
        error = what;
        return CryptoStatus.Err;
    }
}
