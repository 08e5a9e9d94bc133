namespace Vhost.Crypto;

/// <summary>Numbers of the virtio 1.2 crypto device (5.9) and of QEMU's session messages.</summary>
public static class VirtioCryptoSpec
{
    /// <summary>VIRTIO_CRYPTO_SERVICE_CIPHER: symmetric ciphers (and their chaining with a hash or MAC).</summary>
    public const uint ServiceCipher = 0;
    /// <summary>VIRTIO_CRYPTO_SERVICE_HASH: message digests.</summary>
    public const uint ServiceHash = 1;
    /// <summary>VIRTIO_CRYPTO_SERVICE_MAC: message authentication codes.</summary>
    public const uint ServiceMac = 2;
    /// <summary>VIRTIO_CRYPTO_SERVICE_AEAD: authenticated encryption with associated data.</summary>
    public const uint ServiceAead = 3;
    /// <summary>VIRTIO_CRYPTO_SERVICE_AKCIPHER: asymmetric ciphers and signatures.</summary>
    public const uint ServiceAkcipher = 4;

    /// <summary>VIRTIO_CRYPTO_OPCODE: operation <paramref name="op"/> of service <paramref name="service"/>.</summary>
    public static uint Opcode(uint service, uint op) => (service << 8) | op;

    // control queue opcodes QEMU passes on as the session's op_code
    /// <summary>VIRTIO_CRYPTO_CIPHER_CREATE_SESSION.</summary>
    public static readonly uint CipherCreateSession = Opcode(ServiceCipher, 2);
    /// <summary>VIRTIO_CRYPTO_HASH_CREATE_SESSION.</summary>
    public static readonly uint HashCreateSession = Opcode(ServiceHash, 2);
    /// <summary>VIRTIO_CRYPTO_MAC_CREATE_SESSION.</summary>
    public static readonly uint MacCreateSession = Opcode(ServiceMac, 2);
    /// <summary>VIRTIO_CRYPTO_AEAD_CREATE_SESSION.</summary>
    public static readonly uint AeadCreateSession = Opcode(ServiceAead, 2);
    /// <summary>VIRTIO_CRYPTO_AKCIPHER_CREATE_SESSION.</summary>
    public static readonly uint AkcipherCreateSession = Opcode(ServiceAkcipher, 4);

    // data queue opcodes
    /// <summary>VIRTIO_CRYPTO_CIPHER_ENCRYPT.</summary>
    public static readonly uint CipherEncrypt = Opcode(ServiceCipher, 0);
    /// <summary>VIRTIO_CRYPTO_CIPHER_DECRYPT.</summary>
    public static readonly uint CipherDecrypt = Opcode(ServiceCipher, 1);
    /// <summary>VIRTIO_CRYPTO_HASH.</summary>
    public static readonly uint Hash = Opcode(ServiceHash, 0);
    /// <summary>VIRTIO_CRYPTO_MAC.</summary>
    public static readonly uint Mac = Opcode(ServiceMac, 0);
    /// <summary>VIRTIO_CRYPTO_AEAD_ENCRYPT.</summary>
    public static readonly uint AeadEncrypt = Opcode(ServiceAead, 0);
    /// <summary>VIRTIO_CRYPTO_AEAD_DECRYPT.</summary>
    public static readonly uint AeadDecrypt = Opcode(ServiceAead, 1);
    /// <summary>VIRTIO_CRYPTO_AKCIPHER_ENCRYPT.</summary>
    public static readonly uint AkcipherEncrypt = Opcode(ServiceAkcipher, 0);
    /// <summary>VIRTIO_CRYPTO_AKCIPHER_DECRYPT.</summary>
    public static readonly uint AkcipherDecrypt = Opcode(ServiceAkcipher, 1);
    /// <summary>VIRTIO_CRYPTO_AKCIPHER_SIGN.</summary>
    public static readonly uint AkcipherSign = Opcode(ServiceAkcipher, 2);
    /// <summary>VIRTIO_CRYPTO_AKCIPHER_VERIFY.</summary>
    public static readonly uint AkcipherVerify = Opcode(ServiceAkcipher, 3);
}

/// <summary>VIRTIO_CRYPTO_AKCIPHER_*, the key types and the RSA session parameters.</summary>
public enum AkcipherAlgorithm : uint
{
    /// <summary>No algorithm.</summary>
    None = 0,
    /// <summary>RSA.</summary>
    Rsa = 1,
    /// <summary>ECDSA.</summary>
    Ecdsa = 2,
}

/// <summary>VIRTIO_CRYPTO_AKCIPHER_KEY_TYPE_*: which half of the key pair a session holds.</summary>
public enum AkcipherKeyType : uint
{
    /// <summary>A public key.</summary>
    Public = 1,
    /// <summary>A private key.</summary>
    Private = 2,
}

/// <summary>VIRTIO_CRYPTO_RSA_*_PADDING.</summary>
public enum RsaPadding : uint
{
    /// <summary>No padding: textbook RSA.</summary>
    Raw = 0,
    /// <summary>PKCS #1 v1.5 padding.</summary>
    Pkcs1 = 1,
}

/// <summary>VIRTIO_CRYPTO_RSA_* hash numbers (not the hash service's).</summary>
public enum RsaHash : uint
{
    /// <summary>No hash.</summary>
    None = 0,
    /// <summary>MD2.</summary>
    Md2 = 1,
    /// <summary>MD3.</summary>
    Md3 = 2,
    /// <summary>MD4.</summary>
    Md4 = 3,
    /// <summary>MD5.</summary>
    Md5 = 4,
    /// <summary>SHA-1.</summary>
    Sha1 = 5,
    /// <summary>SHA-256.</summary>
    Sha256 = 6,
    /// <summary>SHA-384.</summary>
    Sha384 = 7,
    /// <summary>SHA-512.</summary>
    Sha512 = 8,
    /// <summary>SHA-224.</summary>
    Sha224 = 9,
}

/// <summary>VIRTIO_CRYPTO_CIPHER_*.</summary>
public enum CipherAlgorithm : uint
{
    /// <summary>No algorithm.</summary>
    None = 0,
    /// <summary>ARC4.</summary>
    Arc4 = 1,
    /// <summary>AES in ECB mode.</summary>
    AesEcb = 2,
    /// <summary>AES in CBC mode.</summary>
    AesCbc = 3,
    /// <summary>AES in CTR mode.</summary>
    AesCtr = 4,
    /// <summary>DES in ECB mode.</summary>
    DesEcb = 5,
    /// <summary>DES in CBC mode.</summary>
    DesCbc = 6,
    /// <summary>Triple DES in ECB mode.</summary>
    TripleDesEcb = 7,
    /// <summary>Triple DES in CBC mode.</summary>
    TripleDesCbc = 8,
    /// <summary>Triple DES in CTR mode.</summary>
    TripleDesCtr = 9,
    /// <summary>KASUMI f8.</summary>
    KasumiF8 = 10,
    /// <summary>SNOW 3G UEA2.</summary>
    Snow3gUea2 = 11,
    /// <summary>AES in F8 mode.</summary>
    AesF8 = 12,
    /// <summary>AES in XTS mode.</summary>
    AesXts = 13,
    /// <summary>ZUC EEA3.</summary>
    ZucEea3 = 14,
}

/// <summary>VIRTIO_CRYPTO_HASH_*.</summary>
public enum HashAlgorithm : uint
{
    /// <summary>No algorithm.</summary>
    None = 0,
    /// <summary>MD5.</summary>
    Md5 = 1,
    /// <summary>SHA-1.</summary>
    Sha1 = 2,
    /// <summary>SHA-224.</summary>
    Sha224 = 3,
    /// <summary>SHA-256.</summary>
    Sha256 = 4,
    /// <summary>SHA-384.</summary>
    Sha384 = 5,
    /// <summary>SHA-512.</summary>
    Sha512 = 6,
}

/// <summary>VIRTIO_CRYPTO_MAC_* (the HMAC ones share the hash numbers).</summary>
public enum MacAlgorithm : uint
{
    /// <summary>No algorithm.</summary>
    None = 0,
    /// <summary>HMAC with MD5.</summary>
    HmacMd5 = 1,
    /// <summary>HMAC with SHA-1.</summary>
    HmacSha1 = 2,
    /// <summary>HMAC with SHA-224.</summary>
    HmacSha224 = 3,
    /// <summary>HMAC with SHA-256.</summary>
    HmacSha256 = 4,
    /// <summary>HMAC with SHA-384.</summary>
    HmacSha384 = 5,
    /// <summary>HMAC with SHA-512.</summary>
    HmacSha512 = 6,
    /// <summary>CMAC with Triple DES.</summary>
    Cmac3Des = 25,
    /// <summary>CMAC with AES.</summary>
    CmacAes = 26,
    /// <summary>KASUMI f9.</summary>
    KasumiF9 = 27,
    /// <summary>SNOW 3G UIA2.</summary>
    Snow3gUia2 = 28,
    /// <summary>GMAC with AES.</summary>
    GmacAes = 41,
    /// <summary>GMAC with Twofish.</summary>
    GmacTwofish = 42,
    /// <summary>CBC-MAC with AES.</summary>
    CbcmacAes = 49,
    /// <summary>CBC-MAC with KASUMI f9.</summary>
    CbcmacKasumiF9 = 50,
    /// <summary>AES-XCBC-MAC.</summary>
    XcbcAes = 53,
    /// <summary>ZUC EIA3.</summary>
    ZucEia3 = 54,
}

/// <summary>VIRTIO_CRYPTO_AEAD_*.</summary>
public enum AeadAlgorithm : uint
{
    /// <summary>No algorithm.</summary>
    None = 0,
    /// <summary>AES-GCM.</summary>
    Gcm = 1,
    /// <summary>AES-CCM.</summary>
    Ccm = 2,
    /// <summary>ChaCha20-Poly1305.</summary>
    ChaCha20Poly1305 = 3,
}

/// <summary>The status byte of a data request (virtio_crypto_inhdr).</summary>
public enum CryptoStatus : byte
{
    /// <summary>VIRTIO_CRYPTO_OK: the request succeeded.</summary>
    Ok = 0,
    /// <summary>VIRTIO_CRYPTO_ERR: the request failed or broke a rule.</summary>
    Err = 1,
    /// <summary>VIRTIO_CRYPTO_BADMSG: authentication failed (an AEAD tag did not match).</summary>
    BadMsg = 2,
    /// <summary>VIRTIO_CRYPTO_NOTSUPP: the operation or algorithm is not served.</summary>
    NotSupp = 3,
    /// <summary>VIRTIO_CRYPTO_INVSESS: the session does not exist.</summary>
    InvSess = 4,
    /// <summary>VIRTIO_CRYPTO_NOSPC: no room for another session.</summary>
    NoSpc = 5,
    /// <summary>VIRTIO_CRYPTO_KEY_REJECTED: the key was refused (e.g. a weak key).</summary>
    KeyRejected = 6,
}

/// <summary>VIRTIO_CRYPTO_SYM_OP_*.</summary>
public enum SymOpType : byte
{
    /// <summary>No operation.</summary>
    None = 0,
    /// <summary>A cipher alone.</summary>
    Cipher = 1,
    /// <summary>A cipher chained with a hash or MAC.</summary>
    AlgorithmChaining = 2,
}

/// <summary>VIRTIO_CRYPTO_SYM_HASH_MODE_*.</summary>
public enum HashMode : byte
{
    /// <summary>No hash in the chain.</summary>
    None = 0,
    /// <summary>A plain hash.</summary>
    Plain = 1,
    /// <summary>A keyed hash (MAC).</summary>
    Auth = 2,
    /// <summary>A nested hash.</summary>
    Nested = 3,
}

/// <summary>VIRTIO_CRYPTO_SYM_ALG_CHAIN_ORDER_*.</summary>
public enum ChainOrder : byte
{
    /// <summary>No chaining.</summary>
    None = 0,
    /// <summary>Hash first, then cipher.</summary>
    HashThenCipher = 1,
    /// <summary>Cipher first, then hash.</summary>
    CipherThenHash = 2,
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
