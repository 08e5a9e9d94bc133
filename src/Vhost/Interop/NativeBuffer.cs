using System.Runtime.InteropServices;

namespace Vhost.Interop;

/// <summary>
/// Host memory outside the GC heap, cache-line aligned: packet buffers (the role of DPDK's mbuf memory).
/// Handed out as <see cref="NativeWindow"/>s so packet code stays bounds-checked.
/// </summary>
internal sealed unsafe class NativeBuffer : IDisposable
{
    private void* _memory;

    public NativeBuffer(nuint length)
    {
        if (length == 0) throw new ArgumentOutOfRangeException(nameof(length));
        _memory = NativeMemory.AlignedAlloc(length, 64);
        NativeMemory.Clear(_memory, length);
        Length = length;
    }

    public nuint Length { get; }

    public NativeWindow Window => _memory == null ? throw new ObjectDisposedException(nameof(NativeBuffer)) : new((byte*)_memory, Length);

    public void Dispose()
    {
        if (_memory != null)
        {
            NativeMemory.AlignedFree(_memory);
            _memory = null;
        }
    }
}
