using System.Text;

namespace Vhost.Crypto.Tests;

/// <summary>Published known answers: NIST SP 800-38A (AES), SP 800-67 (3DES), FIPS 180 ("abc"), RFC 2202/4231 (HMAC),
/// the GCM spec's test cases, RFC 3610 (CCM) and RFC 8439 (ChaCha20-Poly1305).</summary>
internal static class Vectors
{
    public static byte[] H(string hex) => Convert.FromHexString(hex.Replace(" ", "", StringComparison.Ordinal));

    public static readonly byte[] AesKey128 = H("2b7e151628aed2a6abf7158809cf4f3c");
    public static readonly byte[] AesKey256 = H("603deb1015ca71be2b73aef0857d7781 1f352c073b6108d72d9810a30914dff4");
    public static readonly byte[] AesIv = H("000102030405060708090a0b0c0d0e0f");
    public static readonly byte[] AesPlain = H("6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51 30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710");
    public static readonly byte[] AesCbc128Cipher = H("7649abac8119b246cee98e9b12e9197d 5086cb9b507219ee95db113a917678b2 73bed6b8e3c1743b7116e69e22229516 3ff1caa1681fac09120eca307586e1a7");
    public static readonly byte[] AesCbc256Cipher = H("f58c4c04d6e5f1ba779eabfb5f7bfbd6 9cfc4e967edb808d679f777bc6702c7d 39f23369a9d9bacfa530e26304231461 b2eb05e2c39be9fcda6c19078c6a9d1b");
    public static readonly byte[] AesEcb128Cipher = H("3ad77bb40d7a3660a89ecaf32466ef97 f5d3d58503b9699de785895a96fdbaaf 43b1cd7f598ece23881b00e3ed030688 7b0c785e27e8ad3f8223207104725dd4");

    public static readonly byte[] DesKey = H("0123456789ABCDEF 23456789ABCDEF01 456789ABCDEF0123");
    public static readonly byte[] DesPlain = Encoding.ASCII.GetBytes("The qufck brown fox jump");
    public static readonly byte[] DesEcbCipher = H("A826FD8CE53B855F CCE21C8112256FE6 68D5C05DD9B6B900");

    public static readonly byte[] Abc = Encoding.ASCII.GetBytes("abc");
    public static readonly byte[] Sha1Abc = H("a9993e364706816aba3e25717850c26c9cd0d89d");
    public static readonly byte[] Sha256Abc = H("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    public static readonly byte[] Sha384Abc = H("cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7");
    public static readonly byte[] Sha512Abc = H("ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");

    public static readonly byte[] Jefe = Encoding.ASCII.GetBytes("Jefe");
    public static readonly byte[] WhatDoYaWant = Encoding.ASCII.GetBytes("what do ya want for nothing?");
    public static readonly byte[] HmacSha1Jefe = H("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    public static readonly byte[] HmacSha256Jefe = H("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    public static readonly byte[] HmacSha384Jefe = H("af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649");
    public static readonly byte[] HmacSha512Jefe = H("164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737");

    public static readonly byte[] GcmKey = H("feffe9928665731c6d6a8f9467308308");
    public static readonly byte[] GcmIv = H("cafebabefacedbaddecaf888");
    public static readonly byte[] GcmPlain = H("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
    public static readonly byte[] GcmAad = H("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    public static readonly byte[] GcmCipher = H("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091");
    public static readonly byte[] GcmTag = H("5bc94fbc3221a5db94fae95ae7121a47");

    public static readonly byte[] CcmKey = H("C0C1C2C3C4C5C6C7C8C9CACBCCCDCECF");
    public static readonly byte[] CcmNonce = H("00000003020100A0A1A2A3A4A5");
    public static readonly byte[] CcmAad = H("0001020304050607");
    public static readonly byte[] CcmPlain = H("08090A0B0C0D0E0F101112131415161718191A1B1C1D1E");
    public static readonly byte[] CcmCipherAndTag = H("588C979A61C663D2F066D0C2C0F989806D5F6B61DAC384 17E8D12CFDF926E0");

    public static readonly byte[] ChaChaKey = H("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    public static readonly byte[] ChaChaNonce = H("070000004041424344454647");
    public static readonly byte[] ChaChaAad = H("50515253c0c1c2c3c4c5c6c7");
    public static readonly byte[] ChaChaPlain = Encoding.ASCII.GetBytes(
        "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.");
    public static readonly byte[] ChaChaCipher = H("d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116");
    public static readonly byte[] ChaChaTag = H("1ae10b594f09e26a7e902ecbd0600691");

    public static byte[] Concat(params byte[][] parts) => [.. parts.SelectMany(p => p)];
}
