using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace Vhost.Interop;

/// <summary>
/// Keeps a front-end that shrinks its memory file after we mapped it from killing the process. A touch of a
/// shared mapping past the end of its file raises SIGBUS, and .NET turns that into a fatal access violation.
/// This guard puts a small SIGBUS handler in front of the runtime's: for a fault inside a guarded mapping
/// it maps an anonymous page over the faulting page (so the load or store is retried and succeeds, on zeros)
/// and counts the fault; anything else goes to the runtime's handler unchanged. The owner of the mapping is
/// then told, from a timer thread, and drops the device (<see cref="MemoryMapping.Faulted"/>).
/// </summary>
/// <remarks>
/// The handler has to be native code that needs nothing from the runtime, and .NET has no way to compile C
/// at build time without asking every consumer for a C toolchain. So it is about forty x86-64 instructions,
/// assembled from the listing next to the bytes (the test SigbusGuardTests.HandlerBytesMatchTheListing
/// assembles the listing again when binutils are present). On any other architecture the guard is off and
/// a shrinking file still kills the process, as documented in docs/security.md.
/// </remarks>
internal static unsafe partial class SigbusGuard
{
    // Data block shared with the handler: [0] previous handler, [8] repaired faults, [16] slots in use (a
    // high-water mark), then Slots slots of 32 bytes: start, end, page size, faults in this slot. A slot
    // matches an address in [start, end); it is made live by writing end last and retired by clearing end
    // first, so the handler never sees a half-written slot as a wider range.
    private const int Slots = 4096;

    /// <summary>How many mappings can be guarded at once.</summary>
    internal const int Capacity = Slots;
    private const int SlotBytes = 32;
    private const int HeaderBytes = 32;
    private const int SIGBUS = 7;
    private const int SA_SIGINFO = 4;

    private static readonly byte[] Handler =
    [
        0x49, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, //  0 movabs r8, <data block>
        0x83, 0x7e, 0x08, 0x02,             //  a cmp dword [rsi+8], 2         si_code == BUS_ADRERR?
        0x75, 0x6b,                         //  e jne chain
        0x48, 0x8b, 0x46, 0x10,             // 10 mov rax, [rsi+16]            si_addr
        0x49, 0x8b, 0x48, 0x10,             // 14 mov rcx, [r8+16]             slots in use
        0x4d, 0x8d, 0x48, 0x20,             // 18 lea r9, [r8+32]
        0x48, 0x85, 0xc9,                   // 1c loop: test rcx, rcx
        0x74, 0x5a,                         // 1f je chain
        0x49, 0x3b, 0x01,                   // 21 cmp rax, [r9]                start
        0x72, 0x4c,                         // 24 jb next
        0x49, 0x3b, 0x41, 0x08,             // 26 cmp rax, [r9+8]              end
        0x73, 0x46,                         // 2a jae next
        0x57, 0x56, 0x52, 0x41, 0x50,       // 2c push rdi; push rsi; push rdx; push r8
        0xf0, 0x49, 0xff, 0x41, 0x18,       // 31 lock inc qword [r9+24]       this slot's faults
        0xf0, 0x49, 0xff, 0x40, 0x08,       // 36 lock inc qword [r8+8]        all faults
        0x49, 0x8b, 0x71, 0x10,             // 3b mov rsi, [r9+16]             length = page size
        0x48, 0x89, 0xf7,                   // 3f mov rdi, rsi
        0x48, 0xf7, 0xdf,                   // 42 neg rdi
        0x48, 0x21, 0xc7,                   // 45 and rdi, rax                 addr = faulting page
        0xba, 0x03, 0x00, 0x00, 0x00,       // 48 mov edx, PROT_READ|PROT_WRITE
        0x41, 0xba, 0x32, 0x00, 0x00, 0x00, // 4d mov r10d, MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS
        0x49, 0xc7, 0xc0, 0xff, 0xff, 0xff, 0xff, // 53 mov r8, -1
        0x45, 0x31, 0xc9,                   // 5a xor r9d, r9d
        0xb8, 0x09, 0x00, 0x00, 0x00,       // 5d mov eax, SYS_mmap
        0x0f, 0x05,                         // 62 syscall
        0x41, 0x58, 0x5a, 0x5e, 0x5f,       // 64 pop r8; pop rdx; pop rsi; pop rdi
        0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, // 69 cmp rax, -4095
        0x73, 0x0a,                         // 6f jae chain                    mmap failed
        0xc3,                               // 71 ret                          the access is retried
        0x49, 0x83, 0xc1, 0x20,             // 72 next: add r9, 32
        0x48, 0xff, 0xc9,                   // 76 dec rcx
        0xeb, 0xa1,                         // 79 jmp loop
        0x41, 0xff, 0x20,                   // 7b chain: jmp [r8]          the runtime's handler, same arguments
    ];

    /// <summary>The assembly the handler bytes come from (GNU as, Intel syntax); see the remarks.</summary>
    internal const string Listing = """
        .intel_syntax noprefix
        .text
        guard:
            movabs r8, 0x1122334455667788
            cmp dword ptr [rsi+8], 2
            jne 3f
            mov rax, [rsi+16]
            mov rcx, [r8+16]
            lea r9, [r8+32]
        1:  test rcx, rcx
            jz 3f
            cmp rax, [r9]
            jb 2f
            cmp rax, [r9+8]
            jae 2f
            push rdi
            push rsi
            push rdx
            push r8
            lock inc qword ptr [r9+24]
            lock inc qword ptr [r8+8]
            mov rsi, [r9+16]
            mov rdi, rsi
            neg rdi
            and rdi, rax
            mov edx, 3
            mov r10d, 0x32
            mov r8, -1
            xor r9d, r9d
            mov eax, 9
            syscall
            pop r8
            pop rdx
            pop rsi
            pop rdi
            cmp rax, -4095
            jae 3f
            ret
        2:  add r9, 32
            dec rcx
            jmp 1b
        3:  jmp qword ptr [r8]
        """;

    /// <summary>The handler's bytes with the data-block placeholder 0x1122334455667788 (for the listing test).</summary>
    internal static byte[] HandlerTemplate()
    {
        var b = (byte[])Handler.Clone();
        BitConverter.TryWriteBytes(b.AsSpan(2, 8), 0x1122334455667788UL);
        return b;
    }

    private static readonly Lock Gate = new();
    private static readonly MemoryMapping?[] Owners = new MemoryMapping?[Slots];
    private static readonly bool[] Reported = new bool[Slots];
    private static ulong* _data;
    private static bool _tried;
    private static long _seenFaults;
    private static Timer? _watch;
    private static bool _fullLogged;
    private static long _refusedForFullTable;

    /// <summary>Whether the handler is installed (x86-64 Linux, and the runtime had a SIGBUS handler to chain to).</summary>
    public static bool Active => _data != null;

    /// <summary>Faults repaired since the process started.</summary>
    public static long RepairedFaults => _data == null ? 0 : (long)Volatile.Read(ref _data[1]);

    private static bool EnsureInstalled()
    {
        if (_tried) return _data != null;
        _tried = true;
        if (RuntimeInformation.ProcessArchitecture != Architecture.X64 || !OperatingSystem.IsLinux()) return false;
        if (Environment.GetEnvironmentVariable("VHOST_NO_SIGBUS_GUARD") == "1") return false;
        SigAction old;
        if (sigaction(SIGBUS, null, &old) != 0) return false;
        // chaining needs a handler to jump to; with SIG_DFL or SIG_IGN there is nothing to preserve
        if ((nuint)old.Handler <= 1 || (old.Flags & SA_SIGINFO) == 0) return false;
        var data = (ulong*)NativeMemory.AlignedAlloc(HeaderBytes + Slots * SlotBytes, 64);
        NativeMemory.Clear(data, HeaderBytes + Slots * SlotBytes);
        data[0] = (ulong)old.Handler;
        var bytes = (byte[])Handler.Clone();
        BitConverter.TryWriteBytes(bytes.AsSpan(2, 8), (ulong)data);
        void* code = MachineCode.Load(bytes);
        if (code == null)
        {
            NativeMemory.AlignedFree(data);
            return false;
        }
        var act = old;
        act.Handler = code;
        act.Flags = old.Flags | SA_SIGINFO;
        _data = data;
        if (sigaction(SIGBUS, &act, null) != 0)
        {
            _data = null;
            return false;
        }
        _watch = new Timer(_ => Watch(), null, 100, 100);
        return true;
    }

    /// <summary>Mappings left unguarded because every slot was taken.</summary>
    public static long RefusedForFullTable => Interlocked.Read(ref _refusedForFullTable);

    /// <summary>
    /// Guards [address, address + length); returns the slot, or -1 if the guard is off or full. A full table
    /// is logged once, then again only after a slot has been freed and the table filled up again.
    /// </summary>
    public static int Add(MemoryMapping owner, void* address, nuint length, nuint pageSize, ILogger? logger = null)
    {
        lock (Gate)
        {
            if (!EnsureInstalled()) return -1;
            for (int i = 0; i < Slots; i++)
            {
                if (Owners[i] != null) continue;
                ulong* s = Slot(i);
                Volatile.Write(ref s[3], 0UL);
                Volatile.Write(ref s[2], (ulong)pageSize);
                Volatile.Write(ref s[0], (ulong)address);
                Volatile.Write(ref s[1], (ulong)address + length);
                Owners[i] = owner;
                Reported[i] = false;
                if ((ulong)(i + 1) > Volatile.Read(ref _data[2])) Volatile.Write(ref _data[2], (ulong)(i + 1));
                return i;
            }
            Interlocked.Increment(ref _refusedForFullTable);
            if (!_fullLogged && logger != null)
            {
                _fullLogged = true;
                logger?.LogError("the SIGBUS guard's table is full ({Slots} mappings): this and later mappings of files that can shrink are unguarded, and a front-end that truncates one kills the process", Slots);
            }
            return -1;
        }
    }

    /// <summary>Stops guarding a slot; call before the range is unmapped.</summary>
    public static void Remove(int slot)
    {
        if (slot < 0) return;
        lock (Gate)
        {
            ulong* s = Slot(slot);
            Volatile.Write(ref s[1], 0UL);
            Volatile.Write(ref s[0], 0UL);
            Owners[slot] = null;
            _fullLogged = false;
        }
    }

    /// <summary>Faults repaired in this slot.</summary>
    public static long FaultsIn(int slot) => slot < 0 ? 0 : (long)Volatile.Read(ref Slot(slot)[3]);

    private static ulong* Slot(int i) => (ulong*)((byte*)_data + HeaderBytes + (nint)i * SlotBytes);

    private static void Watch()
    {
        long now = RepairedFaults;
        if (now == Interlocked.Read(ref _seenFaults)) return;
        Interlocked.Exchange(ref _seenFaults, now);
        var faulted = new List<MemoryMapping>();
        lock (Gate)
        {
            for (int i = 0; i < Slots; i++)
            {
                if (Owners[i] is not { } owner || Reported[i] || FaultsIn(i) == 0) continue;
                Reported[i] = true;
                faulted.Add(owner);
            }
        }
        foreach (var m in faulted) m.OnFaulted();
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct SigAction
    {
        public void* Handler;
        public fixed ulong Mask[16];
        public int Flags;
        public void* Restorer;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int sigaction(int signum, SigAction* act, SigAction* oldact);

}
