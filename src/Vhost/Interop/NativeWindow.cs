using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;
using Vhost.Interop;

namespace Vhost;

/// <summary>
/// A bounds-checked window onto mapped memory. <see cref="Vhost.Memory.GuestMemory"/> hands these out
/// after translating and checking a guest address; everything outside Interop reads and writes guest
/// memory only through them, so no code can reach past what the translation allowed.
/// </summary>
public readonly unsafe struct NativeWindow
{
    private readonly byte* _base;
    private readonly nuint _length;

    internal NativeWindow(byte* address, nuint length)
    {
        _base = address;
        _length = length;
    }

    /// <summary>The window's size in bytes.</summary>
    public nuint Length => _length;

    /// <summary>Whether this is the default window, which points nowhere.</summary>
    public bool IsEmpty => _base == null;

    /// <summary>The address, for diagnostics and identity only.</summary>
    public nint Address => (nint)_base;

    /// <summary>The part of the window from <paramref name="offset"/> that is <paramref name="length"/> bytes long; throws when it reaches outside.</summary>
    public NativeWindow Slice(nuint offset, nuint length)
    {
        if (offset > _length || length > _length - offset) ThrowOutOfRange();
        return new NativeWindow(_base + offset, length);
    }

    /// <summary>The whole window as a span; throws when it is longer than a span can be.</summary>
    public Span<byte> AsSpan()
    {
        if (_length > int.MaxValue) ThrowOutOfRange();
        return new Span<byte>(_base, (int)_length);
    }

    /// <paramref name="length"/> bytes from <paramref name="offset"/> as a span; throws when they reach outside the window.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Span<byte> Span(nuint offset, int length)
    {
        if (length < 0 || offset > _length || (nuint)length > _length - offset) ThrowOutOfRange();
        return new Span<byte>(_base + offset, length);
    }

    /// <summary>A reference to the value at <paramref name="offset"/>, which must be aligned for <typeparamref name="T"/>; throws when it reaches outside the window.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref T Ref<T>(nuint offset) where T : unmanaged
    {
        if (offset > _length || (nuint)sizeof(T) > _length - offset) ThrowOutOfRange();
        return ref Unsafe.AsRef<T>(_base + offset);
    }

    /// <summary>A value at <paramref name="offset"/>, whatever its alignment, bounds-checked like <see cref="Ref{T}"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T ReadUnaligned<T>(nuint offset) where T : unmanaged
    {
        if (offset > _length || (nuint)sizeof(T) > _length - offset) ThrowOutOfRange();
        return Unsafe.ReadUnaligned<T>(_base + offset);
    }

    /// <summary>
    /// Hints the CPU to start loading the window's first cache lines. Guest buffers were last touched by the
    /// front-end's core; asking for them while earlier packets are copied hides that transfer.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Prefetch()
    {
        if (!Sse.IsSupported || _base == null) return;
        Sse.Prefetch0(_base);
        if (_length > 64) Sse.Prefetch0(_base + 64);
    }

    /// <summary>
    /// Evicts the lines that hold [offset, offset + length) from every CPU cache, contents kept (see
    /// <see cref="CacheLines"/>); does nothing where eviction is unsupported.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Evict(nuint offset, nuint length)
    {
        if (offset > _length || length > _length - offset) ThrowOutOfRange();
        CacheLines.Evict(_base + offset, length);
    }

    // DoesNotReturn rather than NoInlining: the JIT then treats each call as the end of its path (it looks at
    // the method, sees it only throws, and never inlines it either). A call it thinks returns keeps every value
    // the loop holds live across it, and on the enqueue path that meant stack stores per frame.
    [DoesNotReturn]
    private static void ThrowOutOfRange() => throw new ArgumentOutOfRangeException(null, "access outside a guest memory window");
}
