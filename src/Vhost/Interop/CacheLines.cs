using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace Vhost.Interop;

/// <summary>
/// Evicts cache lines from every cache (CLFLUSHOPT, or CLFLUSH where that is missing). Contents are kept:
/// a line is written back if it was modified. Used on buffers the guest wrote and we have copied out: the
/// guest's next write into such a line then need not take it back from this core's cache. Where the two
/// cores are far apart that measured 18 % faster for the front-end; where they share a cache it measured 20 %
/// slower, so the data path only evicts as <see cref="Vhost.Rings.LineEvictionTuner"/> decides
/// (docs/benchmarks.md, ninth session).
/// </summary>
/// <remarks>
/// .NET has no intrinsic for either instruction, so, as with <see cref="SigbusGuard"/>, the loop is a few
/// bytes of machine code assembled from the listing next to them (CacheLinesTests checks them against GNU as).
/// It is called with SuppressGCTransition: it touches no managed state and returns in nanoseconds.
/// </remarks>
internal static unsafe class CacheLines
{
    // evict(rdi = first line, rsi = end): evicts each 64-byte line from rdi while rdi < rsi (at least one)
    internal const string ListingOpt = """
        .intel_syntax noprefix
        .text
        1:  clflushopt [rdi]
            add rdi, 64
            cmp rdi, rsi
            jb 1b
            ret
        """;

    internal const string ListingPlain = """
        .intel_syntax noprefix
        .text
        1:  clflush [rdi]
            add rdi, 64
            cmp rdi, rsi
            jb 1b
            ret
        """;

    internal static ReadOnlySpan<byte> CodeOpt =>
    [
        0x66, 0x0f, 0xae, 0x3f,     // 0 clflushopt [rdi]
        0x48, 0x83, 0xc7, 0x40,     // 4 add rdi, 64
        0x48, 0x39, 0xf7,           // 8 cmp rdi, rsi
        0x72, 0xf3,                 // b jb 0
        0xc3,                       // d ret
    ];

    internal static ReadOnlySpan<byte> CodePlain =>
    [
        0x0f, 0xae, 0x3f,           // 0 clflush [rdi]
        0x48, 0x83, 0xc7, 0x40,     // 3 add rdi, 64
        0x48, 0x39, 0xf7,           // 7 cmp rdi, rsi
        0x72, 0xf4,                 // a jb 0
        0xc3,                       // c ret
    ];

    private const int LineBytes = 64;

    private static readonly delegate* unmanaged[SuppressGCTransition]<byte*, byte*, void> Evictor = Load();

    /// <summary>Whether eviction is available (x86-64 Linux with CLFLUSH, and the code page could be made).</summary>
    public static bool IsSupported => Evictor != null;

    /// <summary>Evicts every line that holds a byte of [address, address + length); nothing if unsupported or empty.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Evict(byte* address, nuint length)
    {
        if (Evictor == null || length == 0) return;
        Evictor((byte*)((nuint)address & ~(nuint)(LineBytes - 1)), address + length);
    }

    private static delegate* unmanaged[SuppressGCTransition]<byte*, byte*, void> Load()
    {
        if (RuntimeInformation.ProcessArchitecture != Architecture.X64 || !OperatingSystem.IsLinux() || !X86Base.IsSupported) return null;
        bool opt = (X86Base.CpuId(7, 0).Ebx & (1 << 23)) != 0;
        bool plain = (X86Base.CpuId(1, 0).Edx & (1 << 19)) != 0;
        if (!opt && !plain) return null;
        return (delegate* unmanaged[SuppressGCTransition]<byte*, byte*, void>)MachineCode.Load(opt ? CodeOpt : CodePlain);
    }
}
