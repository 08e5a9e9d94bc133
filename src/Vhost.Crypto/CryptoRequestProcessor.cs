using System.Buffers.Binary;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Vhost.Crypto.Interop;
using Vhost.Rings;

namespace Vhost.Crypto;

/// <summary>
/// Checks and executes one virtio_crypto_op_data_req. The request is copied out of guest memory once and only the
/// copy is checked and used; every length is checked against the chain and the limits before any data moves. The
/// source is gathered into a private buffer and the result scattered back, so a guest that points source and
/// destination at the same pages, or rewrites them meanwhile, only garbles its own result. Nothing here allocates:
/// block ciphers and AES-CCM run on the session's OpenSSL context (Interop), the rest on BCL calls that allocate nothing.
/// Readable part: request, IV, AAD, source; writable part: destination, digest, then the status byte (the last writable byte, as QEMU reads it).
/// </summary>
internal sealed partial class CryptoRequestProcessor
{
    public const int MaxIv = 32;
    private const int MaxDigest = 64;

    private readonly CryptoSessions _sessions;
    private readonly ILogger _logger;
    private readonly CryptoStats _stats;
    private readonly int _queue;
    private readonly int _maxData;
    private readonly byte[] _in;
    private readonly byte[] _out;
    private readonly byte[] _aad;

    public CryptoRequestProcessor(CryptoSessions sessions, int queue, int maxData, int maxAad, CryptoStats stats, ILogger logger)
    {
        _sessions = sessions;
        _queue = queue;
        _maxData = maxData;
        _stats = stats;
        _logger = logger;
        _in = new byte[maxData];
        // room for an AEAD tag after the ciphertext
        _out = new byte[maxData + MaxDigest];
        _aad = new byte[maxAad];
    }

    /// <summary>Runs the request; returns the used length.</summary>
    public uint Process(in DescriptorChain chain, ReadOnlySpan<BufferSegment> all)
    {
        var segs = all.Slice(chain.SegmentStart, chain.SegmentCount);
        Interlocked.Increment(ref _stats._requests);
        if (chain.WritableBytes == 0 || chain.SegmentCount == chain.ReadableSegments)
        {
            // nowhere to put a status: the guest gets its buffers back with nothing written
            Refuse(chain.Id, "no device-writable status byte");
            return 0;
        }
        var readable = segs[..chain.ReadableSegments];
        var writable = segs[chain.ReadableSegments..];
        var last = segs[^1].Window;
        Span<byte> req = stackalloc byte[DataRequest.Size];
        CryptoStatus status;
        if (chain.ReadableBytes < DataRequest.Size || !BufferSegments.Gather(readable, 0, req))
            status = Refuse(chain.Id, "request shorter than 72 bytes");
        else
            status = Run(chain, req, readable, writable);
        last.Span(last.Length - 1, 1)[0] = (byte)status;
        return chain.WritableBytes;
    }

    private CryptoStatus Run(in DescriptorChain chain, ReadOnlySpan<byte> req, ReadOnlySpan<BufferSegment> readable, ReadOnlySpan<BufferSegment> writable)
    {
        uint opcode = BinaryPrimitives.ReadUInt32LittleEndian(req[DataRequest.Opcode..]);
        ulong sessionId = BinaryPrimitives.ReadUInt64LittleEndian(req[DataRequest.SessionId..]);
        bool cipherOp = opcode == VirtioCryptoSpec.CipherEncrypt || opcode == VirtioCryptoSpec.CipherDecrypt;
        bool aeadOp = opcode == VirtioCryptoSpec.AeadEncrypt || opcode == VirtioCryptoSpec.AeadDecrypt;
        bool akOp = opcode >= VirtioCryptoSpec.AkcipherEncrypt && opcode <= VirtioCryptoSpec.AkcipherVerify;
        if (!cipherOp && !aeadOp && !akOp && opcode != VirtioCryptoSpec.Hash && opcode != VirtioCryptoSpec.Mac)
        {
            Interlocked.Increment(ref _stats._notSupported);
            LogNotSupported(_logger, _queue, chain.Id, opcode);
            return CryptoStatus.NotSupp;
        }
        if (!_sessions.TryGet(sessionId, out var session))
        {
            long n = Interlocked.Increment(ref _stats._invalidSession);
            if (n <= 100 || n % 10000 == 0) LogInvalidSession(_logger, _queue, chain.Id, sessionId);
            return CryptoStatus.InvSess;
        }
        try
        {
            var kind = session.Kind;
            bool fits = kind switch
            {
                SessionKind.Cipher or SessionKind.Chain => cipherOp,
                SessionKind.Hash => opcode == VirtioCryptoSpec.Hash,
                SessionKind.Mac => opcode == VirtioCryptoSpec.Mac,
                SessionKind.Akcipher => akOp,
                _ => aeadOp,
            };
            if (!fits) return Refuse(chain.Id, "opcode does not match the session's service");
            lock (session.Gate)
            {
                return kind switch
                {
                    SessionKind.Cipher => Cipher(chain, session, req, readable, writable),
                    SessionKind.Chain => Chain(chain, session, req, readable, writable),
                    SessionKind.Hash or SessionKind.Mac => Digest(chain, session, req, readable, writable),
                    SessionKind.Akcipher => Akcipher(chain, session, opcode, req, readable, writable),
                    _ => Aead(chain, session, opcode == VirtioCryptoSpec.AeadEncrypt, req, readable, writable),
                };
            }
        }
        catch (AuthenticationTagMismatchException)
        {
            Interlocked.Increment(ref _stats._badMessages);
            return CryptoStatus.BadMsg;
        }
        catch (CryptographicException e)
        {
            return Refuse(chain.Id, $"the platform refused the operation: {e.Message}");
        }
        finally
        {
            session.Exit();
        }
    }

    private CryptoStatus Cipher(in DescriptorChain chain, CryptoSession s, ReadOnlySpan<byte> req,
        ReadOnlySpan<BufferSegment> readable, ReadOnlySpan<BufferSegment> writable)
    {
        uint ivLen = U32(req, DataRequest.IvLen), srcLen = U32(req, DataRequest.SrcLen), dstLen = U32(req, DataRequest.DstLen);
        if (CheckLengths(chain, ivLen, 0, srcLen, dstLen, 0) is { } bad) return Refuse(chain.Id, bad);
        if (dstLen < srcLen) return Refuse(chain.Id, "destination shorter than the source");
        if (srcLen % (uint)s.BlockSize != 0) return Refuse(chain.Id, "source not a whole number of cipher blocks");
        if (s.Cbc && ivLen != s.BlockSize) return Refuse(chain.Id, "IV length is not the cipher's block size");
        Span<byte> iv = stackalloc byte[MaxIv];
        iv = iv[..(int)ivLen];
        BufferSegments.Gather(readable, DataRequest.Size, iv);
        var src = _in.AsSpan(0, (int)srcLen);
        var dst = _out.AsSpan(0, (int)srcLen);
        BufferSegments.Gather(readable, DataRequest.Size + ivLen, src);
        if (!s.Cipher!.Transform(iv, src, dst)) return Refuse(chain.Id, "OpenSSL refused the cipher operation");
        BufferSegments.Scatter(writable, 0, dst);
        return Ok(srcLen);
    }

    private CryptoStatus Chain(in DescriptorChain chain, CryptoSession s, ReadOnlySpan<byte> req,
        ReadOnlySpan<BufferSegment> readable, ReadOnlySpan<BufferSegment> writable)
    {
        uint ivLen = U32(req, DataRequest.IvLen), srcLen = U32(req, DataRequest.SrcLen), dstLen = U32(req, DataRequest.DstLen);
        uint cs = U32(req, DataRequest.CipherStart), lc = U32(req, DataRequest.LenToCipher);
        uint hs = U32(req, DataRequest.HashStart), lh = U32(req, DataRequest.LenToHash);
        uint aadLen = U32(req, DataRequest.ChainAadLen), resultLen = U32(req, DataRequest.ChainResultLen);
        if (aadLen != 0)
        {
            Interlocked.Increment(ref _stats._notSupported);
            return CryptoStatus.NotSupp;
        }
        if (CheckLengths(chain, ivLen, 0, srcLen, dstLen, resultLen) is { } bad) return Refuse(chain.Id, bad);
        if (dstLen < srcLen) return Refuse(chain.Id, "destination shorter than the source");
        if ((ulong)cs + lc > srcLen || (ulong)hs + lh > srcLen) return Refuse(chain.Id, "cipher or hash range outside the source");
        if (lc % (uint)s.BlockSize != 0) return Refuse(chain.Id, "cipher range not a whole number of cipher blocks");
        if (s.Cbc && ivLen != s.BlockSize) return Refuse(chain.Id, "IV length is not the cipher's block size");
        if (resultLen != s.ResultLen) return Refuse(chain.Id, "hash result length differs from the session's");
        Span<byte> iv = stackalloc byte[MaxIv];
        iv = iv[..(int)ivLen];
        BufferSegments.Gather(readable, DataRequest.Size, iv);
        var src = _in.AsSpan(0, (int)srcLen);
        var dst = _out.AsSpan(0, (int)srcLen);
        BufferSegments.Gather(readable, DataRequest.Size + ivLen, src);
        src.CopyTo(dst);
        Span<byte> digest = stackalloc byte[MaxDigest];
        // hash-then-cipher hashes what came in, cipher-then-hash what goes out
        if (s.Order == ChainOrder.HashThenCipher) s.Digest(src.Slice((int)hs, (int)lh), digest);
        if (!s.Cipher!.Transform(iv, src.Slice((int)cs, (int)lc), dst.Slice((int)cs, (int)lc)))
            return Refuse(chain.Id, "OpenSSL refused the cipher operation");
        if (s.Order == ChainOrder.CipherThenHash) s.Digest(dst.Slice((int)hs, (int)lh), digest);
        BufferSegments.Scatter(writable, 0, dst);
        BufferSegments.Scatter(writable, dstLen, digest[..(int)resultLen]);
        return Ok(srcLen);
    }

    private CryptoStatus Digest(in DescriptorChain chain, CryptoSession s, ReadOnlySpan<byte> req,
        ReadOnlySpan<BufferSegment> readable, ReadOnlySpan<BufferSegment> writable)
    {
        uint srcLen = U32(req, DataRequest.HashSrcLen), resultLen = U32(req, DataRequest.HashResultLen);
        if (CheckLengths(chain, 0, 0, srcLen, 0, resultLen) is { } bad) return Refuse(chain.Id, bad);
        if (resultLen == 0 || resultLen > s.DigestSize) return Refuse(chain.Id, "hash result length beyond the digest");
        var src = _in.AsSpan(0, (int)srcLen);
        BufferSegments.Gather(readable, DataRequest.Size, src);
        Span<byte> digest = stackalloc byte[MaxDigest];
        s.Digest(src, digest);
        BufferSegments.Scatter(writable, 0, digest[..(int)resultLen]);
        return Ok(srcLen);
    }

    private CryptoStatus Aead(in DescriptorChain chain, CryptoSession s, bool encrypt, ReadOnlySpan<byte> req,
        ReadOnlySpan<BufferSegment> readable, ReadOnlySpan<BufferSegment> writable)
    {
        uint ivLen = U32(req, DataRequest.AeadIvLen), aadLen = U32(req, DataRequest.AeadAadLen);
        uint srcLen = U32(req, DataRequest.AeadSrcLen), dstLen = U32(req, DataRequest.AeadDstLen), tagLen = U32(req, DataRequest.AeadTagLen);
        if (CheckLengths(chain, ivLen, aadLen, srcLen, dstLen, 0) is { } bad) return Refuse(chain.Id, bad);
        if (tagLen != s.TagLen) return Refuse(chain.Id, "tag length differs from the session's");
        bool nonceOk = s.AeadAlg == AeadAlgorithm.Ccm ? ivLen is >= 7 and <= 13 : ivLen == 12;
        if (!nonceOk) return Refuse(chain.Id, $"nonce of {ivLen} bytes");
        // encryption writes ciphertext and tag; decryption reads them and writes the plaintext
        uint text = encrypt ? srcLen : srcLen - Math.Min(srcLen, tagLen);
        if (!encrypt && srcLen < tagLen) return Refuse(chain.Id, "source shorter than the tag");
        if ((ulong)dstLen < (encrypt ? (ulong)srcLen + tagLen : text)) return Refuse(chain.Id, "destination too short");
        Span<byte> nonce = stackalloc byte[MaxIv];
        nonce = nonce[..(int)ivLen];
        BufferSegments.Gather(readable, DataRequest.Size, nonce);
        var aad = _aad.AsSpan(0, (int)aadLen);
        BufferSegments.Gather(readable, DataRequest.Size + ivLen, aad);
        var src = _in.AsSpan(0, (int)srcLen);
        BufferSegments.Gather(readable, DataRequest.Size + ivLen + aadLen, src);
        if (encrypt)
        {
            var ct = _out.AsSpan(0, (int)srcLen);
            var tag = _out.AsSpan((int)srcLen, (int)tagLen);
            if (s.Gcm != null) s.Gcm.Encrypt(nonce, src, ct, tag, aad);
            else if (s.Ccm != null) { if (!s.Ccm.Encrypt(nonce, src, ct, tag, aad)) return Refuse(chain.Id, "OpenSSL refused the AES-CCM encryption"); }
            else s.ChaCha!.Encrypt(nonce, src, ct, tag, aad);
            BufferSegments.Scatter(writable, 0, _out.AsSpan(0, (int)(srcLen + tagLen)));
        }
        else
        {
            var ct = src[..(int)text];
            var tag = src.Slice((int)text, (int)tagLen);
            var pt = _out.AsSpan(0, (int)text);
            if (s.Gcm != null) s.Gcm.Decrypt(nonce, ct, tag, pt, aad);
            else if (s.Ccm != null)
            {
                var r = s.Ccm.Decrypt(nonce, ct, tag, pt, aad);
                if (r == EvpResult.TagMismatch)
                {
                    Interlocked.Increment(ref _stats._badMessages);
                    return CryptoStatus.BadMsg;
                }
                if (r != EvpResult.Ok) return Refuse(chain.Id, "OpenSSL refused the AES-CCM decryption");
            }
            else s.ChaCha!.Decrypt(nonce, ct, tag, pt, aad);
            BufferSegments.Scatter(writable, 0, pt);
        }
        return Ok(srcLen);
    }

    /// <summary>
    /// RSA with PKCS#1 v1.5 padding. Encrypt and decrypt: source readable, destination writable (the result at its
    /// start, the rest zeroed). Sign: the source is the digest, the destination the signature. Verify: source (the
    /// signature) and destination (the digest) both device-readable; BADMSG when they do not match.
    /// </summary>
    private CryptoStatus Akcipher(in DescriptorChain chain, CryptoSession s, uint opcode, ReadOnlySpan<byte> req,
        ReadOnlySpan<BufferSegment> readable, ReadOnlySpan<BufferSegment> writable)
    {
        uint srcLen = U32(req, DataRequest.AkSrcLen), dstLen = U32(req, DataRequest.AkDstLen);
        bool verify = opcode == VirtioCryptoSpec.AkcipherVerify;
        string? bad = CheckLengths(chain, 0, 0, srcLen, verify ? 0 : dstLen, 0);
        if (bad == null && verify && (dstLen > MaxDigest || (ulong)DataRequest.Size + srcLen + dstLen > chain.ReadableBytes))
            bad = "signature and digest run past the readable descriptors";
        if (bad != null) return Refuse(chain.Id, bad);
        var rsa = s.Rsa!;
        int keyBytes = rsa.KeySize / 8;
        bool needsPrivate = opcode == VirtioCryptoSpec.AkcipherDecrypt || opcode == VirtioCryptoSpec.AkcipherSign;
        if (needsPrivate && !s.PrivateKey) return Refuse(chain.Id, "a public-key session cannot decrypt or sign");
        var src = _in.AsSpan(0, (int)srcLen);
        BufferSegments.Gather(readable, DataRequest.Size, src);
        var dst = _out.AsSpan(0, verify ? 0 : (int)dstLen);
        dst.Clear();
        if (opcode == VirtioCryptoSpec.AkcipherEncrypt)
        {
            if (dstLen < keyBytes) return Refuse(chain.Id, "destination shorter than the key");
            if (!rsa.TryEncrypt(src, dst, RSAEncryptionPadding.Pkcs1, out _)) return Refuse(chain.Id, "plaintext too long for the key");
        }
        else if (opcode == VirtioCryptoSpec.AkcipherDecrypt)
        {
            if (srcLen != keyBytes) return Refuse(chain.Id, "ciphertext is not the key's size");
            if (!rsa.TryDecrypt(src, dst, RSAEncryptionPadding.Pkcs1, out _)) return Refuse(chain.Id, "destination too short for the plaintext");
        }
        else if (opcode == VirtioCryptoSpec.AkcipherSign)
        {
            if (s.RsaHashSize == 0) return NotSupported(chain.Id, opcode);
            if (srcLen != s.RsaHashSize) return Refuse(chain.Id, "digest is not the session hash's size");
            if (dstLen < keyBytes) return Refuse(chain.Id, "destination shorter than the key");
            if (!rsa.TrySignHash(src, dst, s.RsaHash, RSASignaturePadding.Pkcs1, out _)) return Refuse(chain.Id, "signature did not fit");
        }
        else
        {
            if (s.RsaHashSize == 0) return NotSupported(chain.Id, opcode);
            if (dstLen != s.RsaHashSize) return Refuse(chain.Id, "digest is not the session hash's size");
            Span<byte> digest = stackalloc byte[MaxDigest];
            digest = digest[..(int)dstLen];
            BufferSegments.Gather(readable, DataRequest.Size + srcLen, digest);
            if (!rsa.VerifyHash(digest, src, s.RsaHash, RSASignaturePadding.Pkcs1))
            {
                Interlocked.Increment(ref _stats._badMessages);
                return CryptoStatus.BadMsg;
            }
            return Ok(srcLen);
        }
        BufferSegments.Scatter(writable, 0, dst);
        return Ok(srcLen);
    }

    private CryptoStatus NotSupported(ushort id, uint opcode)
    {
        Interlocked.Increment(ref _stats._notSupported);
        LogNotSupported(_logger, _queue, id, opcode);
        return CryptoStatus.NotSupp;
    }

    /// <summary>Every length against the limits and the chain, in 64 bits so no sum can wrap; null when they fit.</summary>
    private string? CheckLengths(in DescriptorChain chain, uint iv, uint aad, uint src, uint dst, uint result)
    {
        if (iv > MaxIv) return $"IV of {iv} bytes (at most {MaxIv})";
        if (aad > _aad.Length) return $"AAD of {aad} bytes (at most {_aad.Length})";
        if (src > _maxData || dst > (ulong)_maxData + MaxDigest) return $"data of {Math.Max(src, dst)} bytes (at most {_maxData})";
        if (result > MaxDigest) return $"hash result of {result} bytes";
        if ((ulong)DataRequest.Size + iv + aad + src > chain.ReadableBytes) return "IV, AAD and source run past the readable descriptors";
        if ((ulong)dst + result + 1 > chain.WritableBytes) return "destination, result and status run past the writable descriptors";
        return null;
    }

    private CryptoStatus Ok(uint bytes)
    {
        Interlocked.Add(ref _stats._bytes, bytes);
        return CryptoStatus.Ok;
    }

    private CryptoStatus Refuse(ushort id, string reason)
    {
        long n = Interlocked.Increment(ref _stats._failed);
        // a hostile guest must not be able to flood the log: the first ones, then one in ten thousand
        if (n <= 100 || n % 10000 == 0) LogRefused(_logger, _queue, id, reason);
        return CryptoStatus.Err;
    }

    private static uint U32(ReadOnlySpan<byte> req, int offset) => BinaryPrimitives.ReadUInt32LittleEndian(req[offset..]);



    [LoggerMessage(Level = LogLevel.Warning, Message = "crypto queue {Queue}: request {Id} refused: {Reason}")]
    private static partial void LogRefused(ILogger logger, int queue, ushort id, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "crypto queue {Queue}: request {Id} names session {Session}, which is not open")]
    private static partial void LogInvalidSession(ILogger logger, int queue, ushort id, ulong session);

    [LoggerMessage(Level = LogLevel.Information, Message = "crypto queue {Queue}: request {Id} opcode 0x{Opcode:x} not supported")]
    private static partial void LogNotSupported(ILogger logger, int queue, ushort id, uint opcode);
}
