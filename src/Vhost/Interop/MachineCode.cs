using System.Runtime.InteropServices;

namespace Vhost.Interop;

/// <summary>
/// A few instructions .NET cannot express (a signal handler that needs nothing from the runtime, cache-line
/// flushes it has no intrinsic for), copied into an anonymous page that is made executable only once written,
/// so the page is never writable and executable at once. Pages are never freed: each user loads one for the
/// life of the process.
/// </summary>
internal static unsafe partial class MachineCode
{
    private const int PageBytes = 4096;
    private const int PROT_EXEC = 4;
    private const int MAP_PRIVATE = 2;
    private const int MAP_ANONYMOUS = 0x20;

    /// <summary>The address of a read-only, executable copy of <paramref name="code"/>, or null if the kernel refused.</summary>
    public static void* Load(ReadOnlySpan<byte> code)
    {
        if (code.IsEmpty || code.Length > PageBytes) throw new ArgumentOutOfRangeException(nameof(code));
        void* page = mmap(null, PageBytes, Libc.PROT_READ | Libc.PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (page == (void*)-1) return null;
        code.CopyTo(new Span<byte>(page, code.Length));
        if (mprotect(page, PageBytes, Libc.PROT_READ | PROT_EXEC) != 0)
        {
            _ = Libc.munmap(page, PageBytes);
            return null;
        }
        return page;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial void* mmap(void* addr, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int mprotect(void* addr, nuint len, int prot);
}
