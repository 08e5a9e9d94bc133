using System.Runtime.CompilerServices;

namespace Vhost.Interop;

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

    public nuint Length => _length;

    public bool IsEmpty => _base == null;

    /// <summary>The address, for diagnostics and identity only.</summary>
    public nint Address => (nint)_base;

    public NativeWindow Slice(nuint offset, nuint length)
    {
        if (offset > _length || length > _length - offset) ThrowOutOfRange();
        return new NativeWindow(_base + offset, length);
    }

    public Span<byte> AsSpan()
    {
        if (_length > int.MaxValue) ThrowOutOfRange();
        return new Span<byte>(_base, (int)_length);
    }

    public Span<byte> Span(nuint offset, int length)
    {
        if (length < 0 || offset > _length || (nuint)length > _length - offset) ThrowOutOfRange();
        return new Span<byte>(_base + offset, length);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref T Ref<T>(nuint offset) where T : unmanaged
    {
        if (offset > _length || (nuint)sizeof(T) > _length - offset) ThrowOutOfRange();
        return ref Unsafe.AsRef<T>(_base + offset);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowOutOfRange() => throw new ArgumentOutOfRangeException(null, "access outside a guest memory window");
}
