using System.Runtime.InteropServices;

namespace Vhost.Crypto.Interop;

/// <summary>How an AEAD decryption through EVP ended.</summary>
internal enum EvpResult
{
    Ok,
    TagMismatch,
    Failed,
}

/// <summary>
/// AES or 3DES in ECB or CBC mode without padding, keyed once at session creation. A request only re-initialises the
/// context with its IV (the key stays), so it pays neither OpenSSL's per-call cipher fetch nor a managed allocation,
/// which .NET's one-shot EncryptCbc/EncryptEcb do on every call. One caller at a time (the session's gate).
/// </summary>
internal sealed unsafe class EvpBlockCipher : IDisposable
{
    private readonly CipherContextHandle _ctx;
    private readonly int _ivLength;

    private EvpBlockCipher(CipherContextHandle ctx, int ivLength)
    {
        _ctx = ctx;
        _ivLength = ivLength;
    }

    /// <summary>Null, with the reason, when the algorithm or key length has no EVP cipher here or OpenSSL refuses it.</summary>
    public static EvpBlockCipher? Create(CipherAlgorithm alg, ReadOnlySpan<byte> key, bool encrypt, out string? error)
    {
        if (LibCrypto.LoadError is { } e)
        {
            error = e;
            return null;
        }
        (nint cipher, int ivLength) = (alg, key.Length) switch
        {
            (CipherAlgorithm.AesEcb, 16) => (LibCrypto.EVP_aes_128_ecb(), 0),
            (CipherAlgorithm.AesEcb, 24) => (LibCrypto.EVP_aes_192_ecb(), 0),
            (CipherAlgorithm.AesEcb, 32) => (LibCrypto.EVP_aes_256_ecb(), 0),
            (CipherAlgorithm.AesCbc, 16) => (LibCrypto.EVP_aes_128_cbc(), 16),
            (CipherAlgorithm.AesCbc, 24) => (LibCrypto.EVP_aes_192_cbc(), 16),
            (CipherAlgorithm.AesCbc, 32) => (LibCrypto.EVP_aes_256_cbc(), 16),
            // a 16-byte 3DES key is two-key EDE (K1, K2, K1)
            (CipherAlgorithm.TripleDesEcb, 16) => (LibCrypto.EVP_des_ede_ecb(), 0),
            (CipherAlgorithm.TripleDesEcb, 24) => (LibCrypto.EVP_des_ede3_ecb(), 0),
            (CipherAlgorithm.TripleDesCbc, 16) => (LibCrypto.EVP_des_ede_cbc(), 8),
            (CipherAlgorithm.TripleDesCbc, 24) => (LibCrypto.EVP_des_ede3_cbc(), 8),
            _ => (0, 0),
        };
        if (cipher == 0)
        {
            error = $"no EVP cipher for {alg} with a {key.Length}-byte key";
            return null;
        }
        var ctx = LibCrypto.EVP_CIPHER_CTX_new();
        bool ok = !ctx.IsInvalid;
        fixed (byte* k = key)
        {
            ok = ok && LibCrypto.EVP_CipherInit_ex(ctx, cipher, 0, k, null, encrypt ? 1 : 0) == 1
                && LibCrypto.EVP_CIPHER_CTX_set_padding(ctx, 0) == 1;
        }
        if (!ok)
        {
            LibCrypto.ERR_clear_error();
            ctx.Dispose();
            error = $"OpenSSL refused {alg} with a {key.Length}-byte key";
            return null;
        }
        error = null;
        return new EvpBlockCipher(ctx, ivLength);
    }

    /// <summary>Ciphers <paramref name="src"/> (whole blocks) into <paramref name="dst"/> from <paramref name="iv"/> (ignored by ECB); false when OpenSSL refuses.</summary>
    public bool Transform(ReadOnlySpan<byte> iv, ReadOnlySpan<byte> src, Span<byte> dst)
    {
        if (dst.Length < src.Length || (_ivLength != 0 && iv.Length != _ivLength)) return false;
        if (src.IsEmpty) return true;
        int n = 0, f = 0;
        bool ok;
        fixed (byte* i = iv)
        fixed (byte* s = src)
        fixed (byte* d = dst)
        {
            ok = LibCrypto.EVP_CipherInit_ex(_ctx, 0, 0, null, _ivLength == 0 ? null : i, -1) == 1
                && LibCrypto.EVP_CipherUpdate(_ctx, d, &n, s, src.Length) == 1
                && LibCrypto.EVP_CipherFinal_ex(_ctx, d + n, &f) == 1;
        }
        if (!ok) LibCrypto.ERR_clear_error();
        // without padding every block comes out of the update: anything else would be a mismatch with OpenSSL
        return ok && n + f == src.Length;
    }

    /// <summary>Whether the native context is gone (the session's last user left after its close).</summary>
    public bool IsDisposed => _ctx.IsClosed;

    public void Dispose() => _ctx.Dispose();
}

/// <summary>
/// AES-CCM on one context per session (.NET's AesCcm makes a context and a managed object per call). OpenSSL fixes
/// the nonce and tag lengths into the CCM state when the key is set, and a context keyed once fails the second
/// message's tag (seen with 3.0.19): each request sets the key again, from a copy zeroed when the session goes.
/// </summary>
internal sealed unsafe class EvpCcm : IDisposable
{
    private readonly CipherContextHandle _ctx;
    private readonly byte[] _key;

    private EvpCcm(CipherContextHandle ctx, byte[] key)
    {
        _ctx = ctx;
        _key = key;
    }

    public static EvpCcm? Create(ReadOnlySpan<byte> key, out string? error)
    {
        if (LibCrypto.LoadError is { } e)
        {
            error = e;
            return null;
        }
        nint cipher = key.Length switch
        {
            16 => LibCrypto.EVP_aes_128_ccm(),
            24 => LibCrypto.EVP_aes_192_ccm(),
            32 => LibCrypto.EVP_aes_256_ccm(),
            _ => 0,
        };
        if (cipher == 0)
        {
            error = $"no AES-CCM for a {key.Length}-byte key";
            return null;
        }
        var ctx = LibCrypto.EVP_CIPHER_CTX_new();
        bool ok = !ctx.IsInvalid;
        // the cipher only: every request sets the key after its nonce and tag lengths
        ok = ok && LibCrypto.EVP_CipherInit_ex(ctx, cipher, 0, null, null, 1) == 1;
        if (!ok)
        {
            LibCrypto.ERR_clear_error();
            ctx.Dispose();
            error = $"OpenSSL refused AES-CCM with a {key.Length}-byte key";
            return null;
        }
        error = null;
        return new EvpCcm(ctx, key.ToArray());
    }

    /// <summary>Encrypts <paramref name="plain"/> into <paramref name="cipher"/> (same length) and writes the tag; false when OpenSSL refuses.</summary>
    public bool Encrypt(ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> plain, Span<byte> cipher, Span<byte> tag, ReadOnlySpan<byte> aad)
    {
        if (cipher.Length < plain.Length) return false;
        int n = 0;
        byte none = 0;
        bool ok;
        fixed (byte* iv = nonce)
        fixed (byte* p = &MemoryMarshal.GetReference(plain))
        fixed (byte* c = &MemoryMarshal.GetReference(cipher))
        fixed (byte* t = tag)
        fixed (byte* a = aad)
        {
            // CCM runs its data update even for an empty message (it computes the tag): the pointers must not be null
            ok = Begin(1, iv, nonce.Length, null, tag.Length, plain.Length, a, aad.Length)
                && LibCrypto.EVP_CipherUpdate(_ctx, c == null ? &none : c, &n, p == null ? &none : p, plain.Length) == 1
                && LibCrypto.EVP_CIPHER_CTX_ctrl(_ctx, LibCrypto.EVP_CTRL_AEAD_GET_TAG, tag.Length, t) > 0;
        }
        if (!ok) LibCrypto.ERR_clear_error();
        return ok && n == plain.Length;
    }

    /// <summary>Decrypts and checks the tag; on a mismatch <paramref name="plain"/> holds nothing of use.</summary>
    public EvpResult Decrypt(ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> cipher, ReadOnlySpan<byte> tag, Span<byte> plain, ReadOnlySpan<byte> aad)
    {
        if (plain.Length < cipher.Length) return EvpResult.Failed;
        int n = 0;
        byte none = 0;
        EvpResult result;
        fixed (byte* iv = nonce)
        fixed (byte* c = &MemoryMarshal.GetReference(cipher))
        fixed (byte* p = &MemoryMarshal.GetReference(plain))
        fixed (byte* t = tag)
        fixed (byte* a = aad)
        {
            if (!Begin(0, iv, nonce.Length, t, tag.Length, cipher.Length, a, aad.Length)) result = EvpResult.Failed;
            // the update that decrypts is the one that checks the tag (CCM has no final step)
            else if (LibCrypto.EVP_CipherUpdate(_ctx, p == null ? &none : p, &n, c == null ? &none : c, cipher.Length) != 1) result = EvpResult.TagMismatch;
            else result = n == cipher.Length ? EvpResult.Ok : EvpResult.Failed;
        }
        if (result != EvpResult.Ok) LibCrypto.ERR_clear_error();
        return result;
    }

    /// <summary>EVP's CCM order: direction, nonce length, tag (its length, or the expected tag when decrypting), key and nonce, message length, AAD.</summary>
    private bool Begin(int enc, byte* nonce, int nonceLength, byte* tag, int tagLength, int textLength, byte* aad, int aadLength)
    {
        int n = 0;
        fixed (byte* k = _key)
        {
            return LibCrypto.EVP_CipherInit_ex(_ctx, 0, 0, null, null, enc) == 1
                && LibCrypto.EVP_CIPHER_CTX_ctrl(_ctx, LibCrypto.EVP_CTRL_AEAD_SET_IVLEN, nonceLength, null) > 0
                && LibCrypto.EVP_CIPHER_CTX_ctrl(_ctx, LibCrypto.EVP_CTRL_AEAD_SET_TAG, tagLength, tag) > 0
                && LibCrypto.EVP_CipherInit_ex(_ctx, 0, 0, k, nonce, -1) == 1
                && LibCrypto.EVP_CipherUpdate(_ctx, null, &n, null, textLength) == 1
                && (aadLength == 0 || LibCrypto.EVP_CipherUpdate(_ctx, null, &n, aad, aadLength) == 1);
        }
    }

    public void Dispose()
    {
        _ctx.Dispose();
        System.Security.Cryptography.CryptographicOperations.ZeroMemory(_key);
    }
}
