using Vhost.Interop;
using Vhost.Testing.BackEnd;

namespace Vhost.Tests.Interop;

/// <summary>
/// A file that shrinks under its mapping: without the guard the first touch past the new end raises SIGBUS and
/// kills this test process (so a broken guard fails the whole run, not just this test).
/// </summary>
public sealed class SigbusGuardTests
{
    [Fact]
    public void ATouchPastTheShrunkEndReadsZerosAndIsReportedOnce()
    {
        using var fd = FileDescriptors.CreateMemFd("vhost-shrink", 64 << 10);
        using var map = MemoryMapping.Map(fd, 64 << 10);
        Assert.True(map.IsGuarded, "the SIGBUS guard is not installed (x86-64 Linux expected)");
        int raised = 0;
        using var reported = new ManualResetEventSlim();
        map.Faulted = () =>
        {
            Interlocked.Increment(ref raised);
            reported.Set();
        };
        map.Window.Span(0, 64 << 10).Fill(0x5a);
        FileDescriptors.Truncate(fd, 4096);

        // past the new end: a read sees zeros, a write lands in a private page, and nothing dies
        Assert.Equal(0, map.Window.Span(8192, 1)[0]);
        map.Window.Span(40 << 10, 16).Fill(0x77);
        Assert.Equal(0x77, map.Window.Span(40 << 10, 16)[15]);
        // within the file nothing changed
        Assert.Equal(0x5a, map.Window.Span(4095, 1)[0]);
        Assert.Equal(2, map.LostPageFaults);

        Assert.True(reported.Wait(TimeSpan.FromSeconds(5)), "Faulted was not raised");
        Thread.Sleep(300); // the watcher runs every 100 ms: a second report would come now
        Assert.Equal(1, Volatile.Read(ref raised));
    }

    /// <summary>The handler bytes are what the listing assembles to (GNU as from binutils; test.sh installs it).</summary>
    [Fact]
    public void HandlerBytesMatchTheListing() =>
        Assert.Equal(GnuAssembler.Assemble(SigbusGuard.Listing), SigbusGuard.HandlerTemplate());

    /// <summary>QEMU seals its memfd against shrinking: such a file cannot SIGBUS us and takes no slot.</summary>
    [Fact]
    public void AMemfdSealedAgainstShrinkingIsNotGuarded()
    {
        using var fd = FileDescriptors.CreateMemFd("vhost-sealed", 64 << 10, allowSealing: true);
        FileDescriptors.AddSeals(fd, Libc.F_SEAL_SHRINK);
        using var map = MemoryMapping.Map(fd, 64 << 10);
        Assert.False(map.CanShrink);
        Assert.False(map.IsGuarded);
        Assert.NotEqual(0, Libc.ftruncate(fd, 4096)); // the kernel refuses: EPERM
        map.Window.Span(60 << 10, 16).Fill(1);
    }

    [Fact]
    public void AnUnsealedMemfdIsGuarded()
    {
        using var fd = FileDescriptors.CreateMemFd("vhost-unsealed", 4096, allowSealing: true);
        using var map = MemoryMapping.Map(fd, 4096);
        Assert.True(map.CanShrink);
        Assert.True(map.IsGuarded);
    }

    [Fact]
    public void AFullTableLogsOneLine()
    {
        using var logs = new CapturingLoggerProvider();
        var logger = logs.CreateLogger("Vhost");
        using var fd = FileDescriptors.CreateMemFd("vhost-full", 4096);
        var maps = new List<MemoryMapping>();
        try
        {
            long refusedBefore = SigbusGuard.RefusedForFullTable;
            // the test assembly runs serially, so only this test's mappings compete for the slots
            for (int i = 0; i < SigbusGuard.Capacity + 3; i++) maps.Add(MemoryMapping.Map(fd, 4096, logger: logger));
            Assert.True(maps[0].IsGuarded);
            Assert.False(maps[^1].IsGuarded);
            Assert.True(SigbusGuard.RefusedForFullTable - refusedBefore >= 3);
            Assert.Single(logs.Errors, e => e.Contains("SIGBUS guard's table is full", StringComparison.Ordinal));
        }
        finally
        {
            foreach (var m in maps) m.Dispose();
        }
        using var again = MemoryMapping.Map(fd, 4096, logger: logger);
        Assert.True(again.IsGuarded, "slots freed by Dispose are reused");
    }
}
