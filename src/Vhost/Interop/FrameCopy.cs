using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Vhost.Interop;

/// <summary>
/// The frame copy of the packet data path. Most frames there are short (64 bytes at line rate), and
/// Span.CopyTo is a call into a general Memmove that sorts lengths out first; for 32 to 128 bytes two or four
/// overlapping 32-byte loads and stores do the same work inline. Longer or shorter copies go to CopyTo.
/// </summary>
public static class FrameCopy
{
    /// <summary>Copies all of <paramref name="source"/> to the start of <paramref name="destination"/> (which must not overlap it).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Copy(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        int n = source.Length;
        if ((uint)n > (uint)destination.Length) ThrowTooShort();
        if (!Vector256.IsHardwareAccelerated || n < 32 || n > 128)
        {
            source.CopyTo(destination);
            return;
        }
        // every load and store lies inside [0, n) of both spans: n >= 32 for the first pair, n > 64 for the second
        ref byte s = ref MemoryMarshal.GetReference(source);
        ref byte d = ref MemoryMarshal.GetReference(destination);
        nuint tail = (nuint)(n - 32);
        if (n <= 64)
        {
            var a = Vector256.LoadUnsafe(ref s);
            var b = Vector256.LoadUnsafe(ref s, tail);
            a.StoreUnsafe(ref d);
            b.StoreUnsafe(ref d, tail);
            return;
        }
        var v0 = Vector256.LoadUnsafe(ref s);
        var v1 = Vector256.LoadUnsafe(ref s, 32);
        var v2 = Vector256.LoadUnsafe(ref s, tail - 32);
        var v3 = Vector256.LoadUnsafe(ref s, tail);
        v0.StoreUnsafe(ref d);
        v1.StoreUnsafe(ref d, 32);
        v2.StoreUnsafe(ref d, tail - 32);
        v3.StoreUnsafe(ref d, tail);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowTooShort() => throw new ArgumentException("destination shorter than source");
}
