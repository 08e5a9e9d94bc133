using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Vhost.Interop;

/// <summary>
/// The frame copy of the packet data path. Span.CopyTo is a call into the general Memmove, and a call anywhere
/// in a burst loop, even on a path no 64-byte frame takes, makes the JIT keep the loop's values in memory
/// across it: the enqueue loop stored about twenty of them to the stack per frame, and those stores queued
/// behind the frame's own stores to guest lines that another core holds. So every length is copied here
/// with inline loads and stores (overlapping pairs for short spans, a 32-byte loop for long ones) and no call.
/// </summary>
internal static class FrameCopy
{
    /// <summary>Copies all of <paramref name="source"/> to the start of <paramref name="destination"/> (which must not overlap it).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Copy(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        int n = source.Length;
        if ((uint)n > (uint)destination.Length) ThrowTooShort();
        if (!Vector128.IsHardwareAccelerated)
        {
            source.CopyTo(destination);
            return;
        }
        // every load and store below lies inside [0, n) of both spans: each branch is taken only for the
        // lengths its widest access fits
        ref byte s = ref MemoryMarshal.GetReference(source);
        ref byte d = ref MemoryMarshal.GetReference(destination);
        if (Vector256.IsHardwareAccelerated && n >= 32)
        {
            nuint tail = (nuint)(n - 32);
            if (n <= 64)
            {
                var a = Vector256.LoadUnsafe(ref s);
                var b = Vector256.LoadUnsafe(ref s, tail);
                a.StoreUnsafe(ref d);
                b.StoreUnsafe(ref d, tail);
                return;
            }
            if (n <= 128)
            {
                var v0 = Vector256.LoadUnsafe(ref s);
                var v1 = Vector256.LoadUnsafe(ref s, 32);
                var v2 = Vector256.LoadUnsafe(ref s, tail - 32);
                var v3 = Vector256.LoadUnsafe(ref s, tail);
                v0.StoreUnsafe(ref d);
                v1.StoreUnsafe(ref d, 32);
                v2.StoreUnsafe(ref d, tail - 32);
                v3.StoreUnsafe(ref d, tail);
                return;
            }
            for (nuint i = 0; i < tail; i += 32) Vector256.LoadUnsafe(ref s, i).StoreUnsafe(ref d, i);
            Vector256.LoadUnsafe(ref s, tail).StoreUnsafe(ref d, tail);
            return;
        }
        if (n >= 16)
        {
            nuint tail = (nuint)(n - 16);
            for (nuint i = 0; i < tail; i += 16) Vector128.LoadUnsafe(ref s, i).StoreUnsafe(ref d, i);
            Vector128.LoadUnsafe(ref s, tail).StoreUnsafe(ref d, tail);
            return;
        }
        // the 8- and 4-byte pairs are written out rather than one generic helper: a helper the JIT declined
        // to inline (its budget runs out in the burst loops) would put a call back into every one of them
        if (n >= 8)
        {
            ulong a = Unsafe.ReadUnaligned<ulong>(ref s);
            ulong b = Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref s, n - 8));
            Unsafe.WriteUnaligned(ref d, a);
            Unsafe.WriteUnaligned(ref Unsafe.Add(ref d, n - 8), b);
            return;
        }
        if (n >= 4)
        {
            uint a = Unsafe.ReadUnaligned<uint>(ref s);
            uint b = Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref s, n - 4));
            Unsafe.WriteUnaligned(ref d, a);
            Unsafe.WriteUnaligned(ref Unsafe.Add(ref d, n - 4), b);
            return;
        }
        for (int i = 0; i < n; i++) Unsafe.Add(ref d, i) = Unsafe.Add(ref s, i);
    }

    [DoesNotReturn]
    private static void ThrowTooShort() => throw new ArgumentException("destination shorter than source");
}
