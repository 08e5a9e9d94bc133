using Microsoft.Win32.SafeHandles;

namespace Vhost.Interop;

/// <summary>An owned Linux file descriptor. Every fd the library receives or creates lives in one.</summary>
internal sealed class SafeFd : SafeHandleMinusOneIsInvalid
{
    public SafeFd() : base(ownsHandle: true) { }

    public SafeFd(int fd, bool ownsHandle = true) : base(ownsHandle) => SetHandle(fd);

    public int Fd => (int)handle;

    protected override bool ReleaseHandle() => Libc.close((int)handle) == 0;

    public override string ToString() => $"fd {(int)handle}";
}
