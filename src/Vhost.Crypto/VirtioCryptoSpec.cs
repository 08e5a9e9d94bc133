namespace Vhost.Crypto;

/// <summary>Numbers of the virtio 1.2 crypto device (5.9) and of QEMU's session messages.</summary>
public static class VirtioCryptoSpec
{
    public const uint ServiceCipher = 0, ServiceHash = 1, ServiceMac = 2, ServiceAead = 3, ServiceAkcipher = 4;

    public static uint Opcode(uint service, uint op) => (service << 8) | op;

    // control queue opcodes QEMU passes on as the session's op_code
    public static readonly uint CipherCreateSession = Opcode(ServiceCipher, 2);
    public static readonly uint HashCreateSession = Opcode(ServiceHash, 2);
    public static readonly uint MacCreateSession = Opcode(ServiceMac, 2);
    public static readonly uint AeadCreateSession = Opcode(ServiceAead, 2);
    public static readonly uint AkcipherCreateSession = Opcode(ServiceAkcipher, 4);

    // data queue opcodes
    public static readonly uint CipherEncrypt = Opcode(ServiceCipher, 0);
    public static readonly uint CipherDecrypt = Opcode(ServiceCipher, 1);
    public static readonly uint Hash = Opcode(ServiceHash, 0);
    public static readonly uint Mac = Opcode(ServiceMac, 0);
    public static readonly uint AeadEncrypt = Opcode(ServiceAead, 0);
    public static readonly uint AeadDecrypt = Opcode(ServiceAead, 1);
    public static readonly uint AkcipherEncrypt = Opcode(ServiceAkcipher, 0);
    public static readonly uint AkcipherDecrypt = Opcode(ServiceAkcipher, 1);
    public static readonly uint AkcipherSign = Opcode(ServiceAkcipher, 2);
    public static readonly uint AkcipherVerify = Opcode(ServiceAkcipher, 3);
}

/// <summary>VIRTIO_CRYPTO_AKCIPHER_*, the key types and the RSA session parameters.</summary>
public enum AkcipherAlgorithm : uint
{
    None = 0, Rsa = 1, Ecdsa = 2,
}

public enum AkcipherKeyType : uint
{
    Public = 1, Private = 2,
}

/// <summary>VIRTIO_CRYPTO_RSA_*_PADDING.</summary>
public enum RsaPadding : uint
{
    Raw = 0, Pkcs1 = 1,
}

/// <summary>VIRTIO_CRYPTO_RSA_* hash numbers (not the hash service's).</summary>
public enum RsaHash : uint
{
    None = 0, Md2 = 1, Md3 = 2, Md4 = 3, Md5 = 4, Sha1 = 5, Sha256 = 6, Sha384 = 7, Sha512 = 8, Sha224 = 9,
}

/// <summary>VIRTIO_CRYPTO_CIPHER_*.</summary>
public enum CipherAlgorithm : uint
{
    None = 0, Arc4 = 1, AesEcb = 2, AesCbc = 3, AesCtr = 4, DesEcb = 5, DesCbc = 6, TripleDesEcb = 7, TripleDesCbc = 8,
    TripleDesCtr = 9, KasumiF8 = 10, Snow3gUea2 = 11, AesF8 = 12, AesXts = 13, ZucEea3 = 14,
}

/// <summary>VIRTIO_CRYPTO_HASH_*.</summary>
public enum HashAlgorithm : uint
{
    None = 0, Md5 = 1, Sha1 = 2, Sha224 = 3, Sha256 = 4, Sha384 = 5, Sha512 = 6,
}

/// <summary>VIRTIO_CRYPTO_MAC_* (the HMAC ones share the hash numbers).</summary>
public enum MacAlgorithm : uint
{
    None = 0, HmacMd5 = 1, HmacSha1 = 2, HmacSha224 = 3, HmacSha256 = 4, HmacSha384 = 5, HmacSha512 = 6,
    Cmac3Des = 25, CmacAes = 26, KasumiF9 = 27, Snow3gUia2 = 28, GmacAes = 41, GmacTwofish = 42, CbcmacAes = 49,
    CbcmacKasumiF9 = 50, XcbcAes = 53, ZucEia3 = 54,
}

/// <summary>VIRTIO_CRYPTO_AEAD_*.</summary>
public enum AeadAlgorithm : uint
{
    None = 0, Gcm = 1, Ccm = 2, ChaCha20Poly1305 = 3,
}

/// <summary>The status byte of a data request (virtio_crypto_inhdr).</summary>
public enum CryptoStatus : byte
{
    Ok = 0, Err = 1, BadMsg = 2, NotSupp = 3, InvSess = 4, NoSpc = 5, KeyRejected = 6,
}

/// <summary>VIRTIO_CRYPTO_SYM_OP_*.</summary>
public enum SymOpType : byte
{
    None = 0, Cipher = 1, AlgorithmChaining = 2,
}

/// <summary>VIRTIO_CRYPTO_SYM_HASH_MODE_*.</summary>
public enum HashMode : byte
{
    None = 0, Plain = 1, Auth = 2, Nested = 3,
}

/// <summary>VIRTIO_CRYPTO_SYM_ALG_CHAIN_ORDER_*.</summary>
public enum ChainOrder : byte
{
    None = 0, HashThenCipher = 1, CipherThenHash = 2,
}

/// <summary>Offsets in struct virtio_crypto_op_data_req (72 bytes: a 24-byte header, a 48-byte union).</summary>
internal static class DataRequest
{
    public const int Size = 72;
    public const int Opcode = 0, Algo = 4, SessionId = 8;
    // cipher and chain (virtio_crypto_sym_data_req): the union's parameters, then op_type at 40 into it
    public const int IvLen = 24, SrcLen = 28, DstLen = 32;
    public const int CipherStart = 36, LenToCipher = 40, HashStart = 44, LenToHash = 48, ChainAadLen = 52, ChainResultLen = 56;
    public const int SymOpType = 64;
    // hash and mac
    public const int HashSrcLen = 24, HashResultLen = 28;
    // aead
    public const int AeadIvLen = 24, AeadAadLen = 28, AeadSrcLen = 32, AeadDstLen = 36, AeadTagLen = 40;
    // akcipher
    public const int AkSrcLen = 24, AkDstLen = 28;
}
