using System.Runtime.InteropServices;

namespace Vhost.Crypto.Interop;

/// <summary>
/// The OpenSSL EVP cipher calls the data path needs (the libcrypto .NET itself uses on Linux; the same calls exist in
/// OpenSSL 1.1 and 3). Callers outside Interop use <see cref="EvpBlockCipher"/> and <see cref="EvpCcm"/>, never these.
/// </summary>
internal static unsafe partial class LibCrypto
{
    private const string Lib = "libcrypto";

    public const int EVP_CTRL_AEAD_SET_IVLEN = 0x9;
    public const int EVP_CTRL_AEAD_GET_TAG = 0x10;
    public const int EVP_CTRL_AEAD_SET_TAG = 0x11;

    private static readonly Lazy<string?> s_load = new(Load);

    /// <summary>Null once libcrypto resolves for this assembly, or why it does not.</summary>
    public static string? LoadError => s_load.Value;

    private static string? Load()
    {
        // the soname .NET 10 finds on OpenSSL 3 systems first, then the 1.1 of older distributions
        string[] names = ["libcrypto.so.3", "libcrypto.so.1.1"];
        nint found = 0;
        foreach (var n in names)
            if (NativeLibrary.TryLoad(n, out found)) break;
        if (found == 0) return $"none of {string.Join(", ", names)} could be loaded";
        // every entry point now, so that none can be missing at a request's first call on the data path
        foreach (var f in typeof(LibCrypto).GetMethods(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Static))
            if (f.Name.StartsWith("EVP_", StringComparison.Ordinal) || f.Name.StartsWith("ERR_", StringComparison.Ordinal))
                if (!NativeLibrary.TryGetExport(found, f.Name, out _)) return $"libcrypto has no {f.Name}";
        NativeLibrary.SetDllImportResolver(typeof(LibCrypto).Assembly,
            (name, _, _) => name == Lib ? found : 0);
        return null;
    }

    [LibraryImport(Lib)] public static partial CipherContextHandle EVP_CIPHER_CTX_new();
    [LibraryImport(Lib)] public static partial void EVP_CIPHER_CTX_free(nint ctx);
    [LibraryImport(Lib)] public static partial int EVP_CipherInit_ex(CipherContextHandle ctx, nint cipher, nint engine, byte* key, byte* iv, int enc);
    [LibraryImport(Lib)] public static partial int EVP_CipherUpdate(CipherContextHandle ctx, byte* output, int* outl, byte* input, int inl);
    [LibraryImport(Lib)] public static partial int EVP_CipherFinal_ex(CipherContextHandle ctx, byte* output, int* outl);
    [LibraryImport(Lib)] public static partial int EVP_CIPHER_CTX_set_padding(CipherContextHandle ctx, int padding);
    [LibraryImport(Lib)] public static partial int EVP_CIPHER_CTX_ctrl(CipherContextHandle ctx, int type, int arg, void* ptr);
    [LibraryImport(Lib)] public static partial void ERR_clear_error();

    [LibraryImport(Lib)] public static partial nint EVP_aes_128_ecb();
    [LibraryImport(Lib)] public static partial nint EVP_aes_192_ecb();
    [LibraryImport(Lib)] public static partial nint EVP_aes_256_ecb();
    [LibraryImport(Lib)] public static partial nint EVP_aes_128_cbc();
    [LibraryImport(Lib)] public static partial nint EVP_aes_192_cbc();
    [LibraryImport(Lib)] public static partial nint EVP_aes_256_cbc();
    [LibraryImport(Lib)] public static partial nint EVP_aes_128_ccm();
    [LibraryImport(Lib)] public static partial nint EVP_aes_192_ccm();
    [LibraryImport(Lib)] public static partial nint EVP_aes_256_ccm();
    [LibraryImport(Lib)] public static partial nint EVP_des_ede_ecb();
    [LibraryImport(Lib)] public static partial nint EVP_des_ede_cbc();
    [LibraryImport(Lib)] public static partial nint EVP_des_ede3_ecb();
    [LibraryImport(Lib)] public static partial nint EVP_des_ede3_cbc();
}

/// <summary>An EVP_CIPHER_CTX, freed once by the runtime's handle counting (no call can be running on it then).</summary>
internal sealed class CipherContextHandle : SafeHandle
{
    public CipherContextHandle() : base(0, ownsHandle: true) { }

    public override bool IsInvalid => handle == 0;

    protected override bool ReleaseHandle()
    {
        LibCrypto.EVP_CIPHER_CTX_free(handle);
        return true;
    }
}
