using Vhost.Interop;
using Vhost.Protocol;
using Vhost.Testing.FrontEnd;

namespace Vhost.Tests.Hostile;

/// <summary>
/// SET_LOG_BASE with a log that cannot be what it claims. SET_LOG_BASE always has a reply, so a refusal closes
/// the connection (QEMU stops the migration there); each case shows the one clear error line, the hostile
/// device's fds and mappings released, and the well-behaved device still running.
/// </summary>
[Collection(HostileCollection.Name)]
public sealed class DirtyLogTests
{
    private const ulong LogShmfd = 1UL << (int)ProtocolFeature.LogShmfd;

    /// <summary>A running hostile device (LOG_SHMFD negotiated unless <paramref name="logShmfd"/> is false) is sent SET_LOG_BASE with <paramref name="fd"/>.</summary>
    private static void Case(string phrase, ulong size, ulong offset, Func<SafeFd> fd, bool logShmfd = true)
    {
        using var s = new Scene();
        using (var fe = s.Connect())
        using (var setup = DeviceSetup.Run(fe, new DeviceSetupOptions
        {
            QueueSize = 64,
            MemorySize = 1 << 20,
            ProtocolFeatures = DeviceSetupOptions.DefaultProtocolFeatures | (logShmfd ? LogShmfd : 0),
        }))
        using (var logFd = fd())
        {
            var dev = s.WaitOtherDevice();
            Assert.Equal(logShmfd, dev.HasProtocolFeature(ProtocolFeature.LogShmfd));
            fe.SetLogBase(new LogPayload(size, offset), logFd, readReply: false);
            Scene.AssertClosed(fe);
            Assert.Null(dev.DirtyLog);
        }
        s.AssertOneError(phrase);
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
        Assert.Null(s.Good.DirtyLog);
    }

    private static Func<SafeFd> MemFd(long bytes) => () => FileDescriptors.CreateMemFd("vhost-hostile-log", bytes);

    [Fact]
    public void FdShorterThanTheLog() =>
        Case("log of 8192 bytes at offset 0 needs 8192 bytes of its fd but the fd has 4096", 8192, 0, MemFd(4096));

    [Fact]
    public void OffsetPastTheFdsEnd() =>
        Case("log of 8 bytes at offset 8192 needs 8200 bytes of its fd but the fd has 4096", 8, 8192, MemFd(4096));

    [Theory]
    [InlineData(0x7fff_ffff_ffff_fff8UL)]
    [InlineData(0xffff_ffff_ffff_fff8UL)]
    public void SizeOverflowsWithTheOffset(ulong offset) =>
        Case($"log offset {offset} plus size 4096 overflows", 4096, offset, MemFd(4096));

    [Fact]
    public void SizeZero() => Case("log size is zero", 0, 0, MemFd(4096));

    [Fact]
    public void SizeNotAWholeNumberOfWords() => Case("log size 12 is not a whole number of 64-bit words", 12, 0, MemFd(4096));

    [Fact]
    public void OffsetNotAligned() => Case("log offset 4 is not 8-byte aligned", 8, 4, MemFd(4096));

    [Fact]
    public void SizeAboveTheLargestLog() => Case($"log size {(1UL << 32) + 8} above", (1UL << 32) + 8, 0, MemFd(4096));

    [Fact]
    public void EventFdInsteadOfAMemoryFile() => Case("log fd is not a memory file", 8, 0, () => EventFd.Create());

    [Fact]
    public void PipeInsteadOfAMemoryFile() =>
        Case("log fd is not a memory file", 8, 0, () =>
        {
            var (read, write) = FileDescriptors.Pipe();
            write.Dispose();
            return read;
        });

    [Fact]
    public void WithoutLogShmfdNegotiated() =>
        Case("SET_LOG_BASE without VHOST_USER_PROTOCOL_F_LOG_SHMFD", 4096, 0, MemFd(4096), logShmfd: false);

    [Fact]
    public void NoFd()
    {
        using var s = new Scene();
        using (var fe = s.Connect())
        using (var setup = DeviceSetup.Run(fe, new DeviceSetupOptions
        {
            QueueSize = 64,
            MemorySize = 1 << 20,
            ProtocolFeatures = DeviceSetupOptions.DefaultProtocolFeatures | LogShmfd,
        }))
        {
            fe.Send(VhostUserRequest.SetLogBase, VhostUserPayload.Log(new LogPayload(4096, 0)));
            Scene.AssertClosed(fe);
        }
        s.AssertOneError("SetLogBase carries 0 fds, expected 1");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }
}
