using Vhost.Device;
using Vhost.Memory;
using Vhost.Protocol;
using Vhost.Rings;
using Vhost.Testing.BackEnd;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;

namespace Vhost.Tests.Device;

/// <summary>
/// Dirty logging on a running device when the front-end does odd but legal things (a second SET_LOG_BASE while
/// traffic runs, LOG_ALL before any log, a log too small for guest memory), and what an application that writes
/// guest memory itself marks (rte_vhost_log_write, rte_vhost_log_used_vring).
/// </summary>
public sealed class DirtyLogTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(10);
    private const ulong LogShmfd = 1UL << (int)ProtocolFeature.LogShmfd;
    private const ulong GuestBase = 0x10_0000;

    private sealed class Running : IDisposable
    {
        public readonly TestBackEnd Be = new();
        public readonly TestFrontEnd Fe;
        public readonly DeviceSetup Setup;
        public readonly VhostDevice Dev;
        public readonly DriverRing Ring;
        private readonly DescriptorChain[] _chains = new DescriptorChain[1];
        private readonly BufferSegment[] _segs = new BufferSegment[8];

        public Running(bool packed = false)
        {
            Fe = Be.Connect();
            Setup = DeviceSetup.Run(Fe, new DeviceSetupOptions
            {
                Packed = packed,
                QueueSize = 64,
                MemorySize = 1 << 20,
                GuestBase = GuestBase,
                ProtocolFeatures = DeviceSetupOptions.DefaultProtocolFeatures | LogShmfd,
            });
            Be.Ops.WaitFor("new");
            Dev = Be.Ops.LastNew!;
            Ring = DriverRing.Create(Setup[0], Setup.Memory);
        }

        public FrontEndMemory Memory => Setup.Memory;

        public ulong Page() => Memory.Allocate(4096, 4096);

        /// <summary>
        /// One buffer through queue 0 as an application moves it: the driver posts <paramref name="gpa"/>, a burst
        /// pops it, writes <paramref name="bytes"/> bytes into it and returns it with its segments (so they are logged).
        /// </summary>
        public void Move(ulong gpa, uint bytes, byte fill)
        {
            Ring.Add(new DriverBuffer(gpa, bytes, true));
            var q = Dev.Queue(0);
            // the control plane holds the queue for a moment when the log changes: take the next burst after it
            var end = DateTime.UtcNow + T;
            VirtqueueBurst burst;
            while (!q.TryBeginBurst(out burst))
            {
                Assert.True(DateTime.UtcNow < end, "no lease");
                Thread.Yield();
            }
            using (burst)
            {
                Assert.Equal(1, burst.Pop(_chains, _segs));
                _segs[0].Window.AsSpan().Fill(fill);
                burst.PushUsed(_chains[0], bytes, _segs);
                burst.FlushUsed();
            }
            Assert.True(Ring.TryGetUsed(out var u));
            Assert.Equal(bytes, u.Length);
        }

        public void Dispose()
        {
            Setup.Dispose();
            Fe.Dispose();
            Be.Dispose();
        }
    }

    private static ulong LogAll => VirtioFeature.Bit(VirtioFeature.LogAll);

    [Fact]
    public void LogWriteMarksEveryPageOfItsRangeAndNothingElse()
    {
        using var r = new Running();
        using var log = new MigrationLog(r.Memory, extraFdBytes: 4096);
        log.StartLogging(r.Fe, r.Setup);
        Assert.True(r.Dev.IsLogging);
        // the traffic of the set-up is none yet: start from an empty log
        log.Sync();
        log.ForgetSeen();
        void Expect(string what, params ulong[] pages)
        {
            log.Sync();
            Assert.True(pages.Order().SequenceEqual(log.SeenPages()),
                $"{what}: marked [{string.Join(", ", log.SeenPages().Select(p => $"0x{p:x}"))}], expected [{string.Join(", ", pages.Select(p => $"0x{p:x}"))}]");
            log.ForgetSeen();
        }
        const ulong First = GuestBase >> 12;
        r.Dev.LogWrite(GuestBase + 5, 1);
        Expect("one byte", First);
        r.Dev.LogWrite(GuestBase + 4095, 2);
        Expect("two bytes across a page boundary", First, First + 1);
        // pages 0x13f and 0x140: bit 63 of word 4 and bit 0 of word 5
        r.Dev.LogWrite((0x13fUL << 12) + 4000, 200);
        Expect("across a word boundary", 0x13f, 0x140);
        r.Dev.LogWrite(GuestBase + 3 * 4096, 3 * 4096);
        Expect("three whole pages", First + 3, First + 4, First + 5);
        r.Dev.LogWrite(GuestBase + 70 * 4096 + 1, 64 * 4096);
        Expect("65 pages over two words", [.. Enumerable.Range(70, 65).Select(i => First + (ulong)i)]);
        r.Dev.LogWrite(GuestBase, 0);
        Expect("zero length");

        // past the log's end: counted, never made (the fd's bytes after the log stay zero)
        ulong lastPage = log.Pages - 1;
        long before = r.Dev.DirtyLogWritesPastEnd;
        r.Dev.LogWrite((lastPage + 1) << 12, 1);
        Assert.Equal(before + 1, r.Dev.DirtyLogWritesPastEnd);
        r.Dev.LogWrite((lastPage << 12) + 4000, 8192);
        Assert.Equal(before + 2, r.Dev.DirtyLogWritesPastEnd);
        Expect("straddling the end", lastPage);
        r.Dev.LogWrite(ulong.MaxValue - 10, 100);
        Assert.Equal(before + 3, r.Dev.DirtyLogWritesPastEnd);
        Assert.All(log.FileBytes.AsSpan()[(int)log.Size..].ToArray(), b => Assert.Equal(0, b));

        // logging off: nothing is marked
        Assert.Equal(0UL, r.Fe.SetFeatures(r.Setup.AckedFeatures, needReply: true));
        Assert.False(r.Dev.IsLogging);
        r.Dev.LogWrite(GuestBase, 4096);
        Expect("LOG_ALL cleared");
        Assert.True(r.Dev.IsRunning);
    }

    [Theory]
    [InlineData(false, 1UL << 32)]
    [InlineData(true, 1UL << 32)]
    [InlineData(false, ulong.MaxValue - 2)]
    [InlineData(true, ulong.MaxValue - 2)]
    public void UsedRingLogAddressOutsideGuestMemoryIsRefused(bool packed, ulong bad)
    {
        // 4 GiB up, where no region lies; and one whose used ring would wrap the address space
        using var r = new Running(packed);
        var q0 = r.Setup[0];
        Assert.True(r.Dev.Queue(0).Started);
        Assert.NotEqual(0UL, r.Fe.SetVringAddr(q0.Address with { Flags = VringAddress.FlagLog, LogGuestAddr = bad }, needReply: true));
        Assert.Single(r.Be.Logs.Errors, e => e.Contains($"used ring log address 0x{bad:x}", StringComparison.Ordinal));
        // that ring stops (its addresses no longer translate as given); the device, its other queue and the process go on
        Assert.False(r.Dev.Queue(0).Started);
        Assert.True(r.Dev.Queue(1).Started);
        Assert.Null(r.Dev.FaultReason);
        Assert.False(r.Fe.IsClosedByPeer(TimeSpan.FromMilliseconds(100)));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LogUsedRingMarksTheLogAddressTheFrontEndGave(bool packed)
    {
        using var r = new Running(packed);
        using var log = new MigrationLog(r.Memory);
        Assert.Equal(0UL, log.SetLogBase(r.Fe));
        Assert.Equal(0UL, r.Fe.SetFeatures(r.Setup.AckedFeatures | LogAll, needReply: true));
        // a log address that is not where the used ring lies: what the front-end says is what is marked
        ulong elsewhere = r.Memory.Allocate(3 * 4096, 4096);
        var q0 = r.Setup[0];
        Assert.Equal(0UL, r.Fe.SetVringAddr(q0.Address with { Flags = VringAddress.FlagLog, LogGuestAddr = elsewhere }, needReply: true));
        log.Sync();
        log.ForgetSeen();
        Assert.True(r.Dev.LogUsedRing(0, 0, 2));
        Assert.True(r.Dev.LogUsedRing(0, 4096 + 4, 8));
        log.Sync();
        Assert.Equal(new[] { elsewhere >> 12, (elsewhere >> 12) + 1 }, log.SeenPages());
        log.ForgetSeen();
        // and the ring's own writes go there too: used elements (split), event suppression (both)
        r.Move(r.Page(), 16, 1);
        log.Sync();
        if (!packed) Assert.Contains(elsewhere >> 12, log.SeenPages());
        else Assert.Contains(q0.DescGpa >> 12, log.SeenPages());
        log.ForgetSeen();
        Assert.True(r.Dev.Queue(0).TryBeginBurst(out var burst));
        using (burst)
        {
            burst.SetNotificationsEnabled(false);
            burst.SetNotificationsEnabled(true);
        }
        log.Sync();
        Assert.Equal(new[] { elsewhere >> 12 }, log.SeenPages());
        Assert.DoesNotContain(q0.UsedGpa >> 12, log.SeenPages());
        log.ForgetSeen();
        // without F_LOG the ring's own guest address
        Assert.True(r.Dev.LogUsedRing(1, 8, 4));
        log.Sync();
        Assert.Equal(new[] { r.Setup[1].UsedGpa >> 12 }, log.SeenPages());
        Assert.False(r.Dev.LogUsedRing(2, 0, 4));
        Assert.False(r.Dev.LogUsedRing(-1, 0, 4));
        Assert.True(r.Dev.IsRunning);
    }

    [Fact]
    public void FeaturesChangedFiresWhenLoggingStartsAndEnds()
    {
        using var r = new Running();
        using var log = new MigrationLog(r.Memory);
        Assert.Equal(0UL, log.SetLogBase(r.Fe));
        Assert.False(r.Dev.IsLogging);
        Assert.False(r.Dev.Queue(0).Logging);
        ulong on = r.Setup.AckedFeatures | LogAll;
        Assert.Equal(0UL, r.Fe.SetFeatures(on, needReply: true));
        Assert.Equal($"features {r.Dev.Id} 0x{on:x}", r.Be.Ops.WaitFor("features"));
        Assert.True(r.Dev.IsLogging);
        Assert.True(r.Dev.Queue(0).Logging && r.Dev.Queue(1).Logging);
        ulong page = r.Page();
        r.Move(page, 100, 1);
        log.Sync();
        Assert.True(log.IsSeen(page >> 12));
        Assert.True(log.IsSeen(r.Setup[0].UsedGpa >> 12));
        Assert.Equal(0UL, r.Fe.SetFeatures(r.Setup.AckedFeatures, needReply: true));
        Assert.Equal($"features {r.Dev.Id} 0x{r.Setup.AckedFeatures:x}", r.Be.Ops.WaitFor("features"));
        Assert.False(r.Dev.IsLogging);
        Assert.False(r.Dev.Queue(0).Logging);
        log.ForgetSeen();
        r.Move(page, 100, 2);
        Assert.Equal(0, log.Sync());
        Assert.True(r.Dev.IsRunning);
    }

    [Fact]
    public void LogAllWithoutALogBaseLogsNothingAndSaysSoOnce()
    {
        using var r = new Running();
        ulong on = r.Setup.AckedFeatures | LogAll;
        Assert.Equal(0UL, r.Fe.SetFeatures(on, needReply: true));
        r.Be.Ops.WaitFor("features");
        Assert.False(r.Dev.IsLogging);
        Assert.False(r.Dev.Queue(0).Logging);
        ulong page = r.Page();
        r.Move(page, 64, 1);
        r.Dev.LogWrite(page, 64);
        Assert.True(r.Dev.LogUsedRing(0, 0, 4));
        Assert.Equal(0, r.Dev.DirtyLogWritesPastEnd);
        var warnings = r.Be.Logs.Lines.Where(l => l.Level >= Microsoft.Extensions.Logging.LogLevel.Warning && l.Text.Contains("LOG_ALL", StringComparison.Ordinal)).ToList();
        Assert.True(warnings.Count == 1, $"expected one line about LOG_ALL, got: {string.Join(" | ", warnings.Select(w => w.Text))}");
        Assert.Equal(Microsoft.Extensions.Logging.LogLevel.Warning, warnings[0].Level);
        Assert.Contains("no SET_LOG_BASE", warnings[0].Text, StringComparison.Ordinal);
        Assert.Empty(r.Be.Logs.Errors);
        // the log that comes later is used at once
        using var log = new MigrationLog(r.Memory);
        Assert.Equal(0UL, log.SetLogBase(r.Fe));
        Assert.True(r.Dev.IsLogging);
        Assert.True(r.Dev.Queue(0).Logging);
        r.Move(page, 64, 2);
        log.Sync();
        Assert.True(log.IsSeen(page >> 12));
        Assert.True(r.Dev.IsRunning);
    }

    [Fact]
    public void LogTooSmallForGuestMemoryCountsWhatFallsPastItsEnd()
    {
        using var r = new Running();
        // guest memory is pages 0x100..0x1ff; six words cover pages below 0x180. The bitmap sits at offset 8 of a
        // page-long fd, so bytes on both sides of it show any write made outside it
        using var log = new MigrationLog(r.Memory, size: 48, offset: 8, extraFdBytes: 4096 - 56);
        log.StartLogging(r.Fe, r.Setup);
        Assert.True(r.Dev.IsLogging);
        ulong low = r.Page();
        r.Memory.Allocate(0x8_0000, 4096);
        ulong high = r.Page();
        Assert.True(low >> 12 < 0x180 && high >> 12 >= 0x180);
        long before = r.Dev.DirtyLogWritesPastEnd;
        r.Move(low, 4096, 1);
        Assert.Equal(before, r.Dev.DirtyLogWritesPastEnd);
        r.Move(high, 4096, 2);
        Assert.True(r.Dev.DirtyLogWritesPastEnd > before);
        long afterRing = r.Dev.DirtyLogWritesPastEnd;
        r.Dev.LogWrite(high, 10);
        Assert.Equal(afterRing + 1, r.Dev.DirtyLogWritesPastEnd);
        log.Sync();
        Assert.True(log.IsSeen(low >> 12));
        Assert.Equal(0, log.FileBytes.AsSpan()[..8].ToArray().Count(b => b != 0));
        Assert.Equal(0, log.FileBytes.AsSpan()[56..].ToArray().Count(b => b != 0));
        Assert.True(r.Dev.IsRunning);
        Assert.Null(r.Dev.FaultReason);
        Assert.Empty(r.Be.Logs.Errors);
    }

    /// <summary>
    /// A second SET_LOG_BASE (QEMU resizes the log when guest memory grows) while a burst loop and an application
    /// thread calling LogWrite both run: after the reply nothing reaches the first log (QEMU reads it once more
    /// after the reply and drops it, so a bit set there later is lost), the second one gets the bits, and the
    /// first one's mapping goes. The application marks 16 GiB above guest memory per call (65536 words of a
    /// 1 MiB log), so its calls are long enough for the reply to fall inside one.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SecondLogBaseWhileTrafficRunsRetiresTheFirstLog(bool packed)
    {
        using var r = new Running(packed);
        const ulong LogBytes = 1 << 20, AppBase = 1UL << 30, AppLength = 16UL << 30;
        using var first = new MigrationLog(r.Memory, size: LogBytes);
        first.StartLogging(r.Fe, r.Setup);
        var firstLog = r.Dev.DirtyLog!;
        ulong trafficPage = r.Page(), appPage = AppBase;
        long bursts = 0, appWrites = 0;
        var progress = new object();
        Exception? failed = null;
        bool stop = false;
        void Tick(ref long counter)
        {
            lock (progress)
            {
                counter++;
                Monitor.PulseAll(progress);
            }
        }
        void WaitFor(Func<bool> done)
        {
            lock (progress)
            {
                while (!done())
                {
                    if (failed != null) throw new InvalidOperationException("a traffic thread failed", failed);
                    Assert.True(Monitor.Wait(progress, T), "the traffic made no progress");
                }
            }
        }
        var traffic = new Thread(() =>
        {
            try
            {
                for (byte i = 0; !Volatile.Read(ref stop); i++)
                {
                    r.Move(trafficPage, 256, i);
                    Tick(ref bursts);
                }
            }
            catch (Exception e)
            {
                failed = e;
                lock (progress) Monitor.PulseAll(progress);
            }
        }) { IsBackground = true };
        var app = new Thread(() =>
        {
            while (!Volatile.Read(ref stop))
            {
                r.Dev.LogWrite(AppBase, AppLength);
                Tick(ref appWrites);
            }
        }) { IsBackground = true };
        string Describe(IEnumerable<ulong> pages)
        {
            var l = pages.ToList();
            int app = l.Count(p => p >= AppBase >> 12 && p < (AppBase + AppLength) >> 12);
            return $"{l.Count} page(s): {app} of LogWrite's range, {l.Count(p => p == trafficPage >> 12)} the bursts' buffer, {l.Count - app - l.Count(p => p == trafficPage >> 12)} other";
        }
        traffic.Start();
        app.Start();
        try
        {
            WaitFor(() => bursts >= 50 && appWrites >= 50);
            first.Sync();
            Assert.True(first.IsSeen(trafficPage >> 12) && first.IsSeen(appPage >> 12));

            using var second = new MigrationLog(r.Memory, size: LogBytes);
            Assert.Equal(0UL, second.SetLogBase(r.Fe));
            // bits set before the reply may still be read from the first log (QEMU syncs it after the reply)
            first.Sync();
            long b0, a0;
            lock (progress) (b0, a0) = (bursts, appWrites);
            Assert.NotSame(firstLog, r.Dev.DirtyLog);
            WaitFor(() => bursts >= b0 + 50 && appWrites >= a0 + 50);
            Assert.True(SpinWait.SpinUntil(() => firstLog.IsUnmapped, T), "the first log was never unmapped");
            first.ForgetSeen();
            first.Sync();
            Assert.True(!first.SeenPages().Any(), $"after the reply the first log got {Describe(first.SeenPages())}");
            second.Sync();
            Assert.True(second.IsSeen(trafficPage >> 12), "the bursts did not mark the second log");
            Assert.True(second.IsSeen(appPage >> 12), "LogWrite did not mark the second log");
            Assert.True(second.IsSeen((packed ? r.Setup[0].DescGpa : r.Setup[0].UsedGpa) >> 12), "the ring's writes did not mark the second log");
            Assert.Contains(r.Be.Logs.Lines, l => l.Text.Contains("replacing the last one", StringComparison.Ordinal));

            // a third, identical in size, while it all still runs: the second goes the same way
            var secondLog = r.Dev.DirtyLog!;
            using var third = new MigrationLog(r.Memory, size: LogBytes);
            Assert.Equal(0UL, third.SetLogBase(r.Fe));
            second.Sync();
            lock (progress) (b0, a0) = (bursts, appWrites);
            WaitFor(() => bursts >= b0 + 50 && appWrites >= a0 + 50);
            Assert.True(SpinWait.SpinUntil(() => secondLog.IsUnmapped, T), "the second log was never unmapped");
            second.ForgetSeen();
            second.Sync();
            Assert.True(!second.SeenPages().Any(), $"after the reply the second log got {Describe(second.SeenPages())}");
            Assert.True(third.Sync() > 0);
        }
        finally
        {
            Volatile.Write(ref stop, true);
            traffic.Join();
            app.Join();
        }
        Assert.Null(failed);
        Assert.True(r.Dev.IsRunning);
        Assert.Empty(r.Be.Logs.Errors);
    }
}
