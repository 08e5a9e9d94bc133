using Vhost.Device;
using Vhost.Interop;
using Vhost.Memory;
using Vhost.Protocol;
using Vhost.Testing.BackEnd;
using Vhost.Testing.FrontEnd;

namespace Vhost.Tests.Device;

/// <summary>
/// Postcopy live migration at protocol level, in QEMU 7.2's order: ADVISE (a userfaultfd comes back), LISTEN,
/// the memory table answered with the back-end's addresses, QEMU's acknowledgement, then faults on pages not yet
/// there: the test plays QEMU's fault thread (reads the fault from the userfaultfd, writes the page through its
/// own mapping of the memfd, wakes the faulting thread), and END.
/// </summary>
public sealed class PostcopyTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(5);
    private const ulong Page = 4096;
    private static readonly ulong PagefaultBit = 1UL << (int)ProtocolFeature.Pagefault;

    private static DeviceSetupOptions Options(bool memSlots = false, bool replyAck = true)
    {
        ulong pf = DeviceSetupOptions.DefaultProtocolFeatures | PagefaultBit;
        if (!memSlots) pf &= ~(1UL << (int)ProtocolFeature.ConfigureMemSlots);
        if (!replyAck) pf &= ~(1UL << (int)ProtocolFeature.ReplyAck);
        return new DeviceSetupOptions { ProtocolFeatures = pf };
    }

    private static VhostDevice OnlyDevice(TestBackEnd be)
    {
        var end = DateTime.UtcNow + T;
        while (DateTime.UtcNow < end)
        {
            if (be.Socket.Devices.Count == 1) return be.Socket.Devices[0];
            Thread.Sleep(5);
        }
        throw new TimeoutException("no device");
    }

    /// <summary>A reader on its own thread of one byte of the back-end's mapping (it stalls on a missing page).</summary>
    private sealed class Reader
    {
        public readonly ManualResetEventSlim Done = new();
        public byte Value;

        public Reader(NativeWindow w)
        {
            var t = new Thread(() =>
            {
                Value = w.Span(0, 1)[0];
                Done.Set();
            }) { IsBackground = true, Name = "postcopy test reader" };
            t.Start();
        }

        public bool Wait(TimeSpan timeout) => Done.Wait(timeout);

        public bool IsCompleted => Done.IsSet;
    }

    private static Reader ReadOnOwnThread(NativeWindow w) => new(w);

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AdviseListenMemTableFaultWakeEnd(bool replyAck)
    {
        using var be = new TestBackEnd(extraProtocolFeatures: PagefaultBit);
        using var fe = be.Connect();
        using var setup = new DeviceSetup(fe, Options(replyAck: replyAck));
        setup.Negotiate();
        Assert.NotEqual(0UL, setup.AckedProtocolFeatures & PagefaultBit);
        var dev = OnlyDevice(be);

        using var uffd = fe.PostcopyAdvise();
        Assert.NotNull(uffd);
        Assert.True(UserFaultFd.IsUserFaultFd(uffd), "the fd POSTCOPY_ADVISE returned is not a userfaultfd");
        Assert.Equal(PostcopyPhase.Advised, dev.Postcopy);
        Assert.Equal(0UL, fe.PostcopyListen());
        Assert.Equal(PostcopyPhase.Listening, dev.Postcopy);

        var mine = setup.Memory.Regions[0].Info;
        var answered = fe.SetMemTablePostcopy(setup.Memory, acknowledge: false);
        var r = Assert.Single(answered);
        Assert.Equal(mine.GuestPhysAddr, r.GuestPhysAddr);
        Assert.Equal(mine.Size, r.Size);
        Assert.Equal(mine.MmapOffset, r.MmapOffset);
        Assert.NotEqual(mine.UserAddr, r.UserAddr);
        // nothing is used, or registered, before QEMU has acknowledged
        Assert.Equal(0, dev.Memory.Count);
        Assert.Equal(0, dev.PostcopyRegisteredRegions);
        fe.PostcopyMemoryAck(VhostUserRequest.SetMemTable);
        fe.GetFeatures(); // its reply comes after the ack was handled
        Assert.Equal(1, dev.PostcopyRegisteredRegions);
        Assert.Equal(1, dev.Memory.Count);

        // a page nobody has touched yet is missing: the back-end's reader stalls until the front-end has placed it
        ulong gpa = mine.GuestPhysAddr + 8 * (1 << 20) + 123;
        Assert.True(dev.Memory.TryTranslate(gpa, 1, out var w));
        Assert.Equal(r.UserAddr + (gpa - r.GuestPhysAddr), (ulong)w.Address);
        var reader = ReadOnOwnThread(w);
        ulong? fault = UserFaultFd.ReadFault(uffd, (int)T.TotalMilliseconds);
        Assert.True(fault.HasValue, "no page fault arrived on the userfaultfd");
        ulong pageAddr = (ulong)w.Address & ~(Page - 1);
        Assert.Equal(pageAddr, fault.Value & ~(Page - 1));
        Assert.False(reader.IsCompleted, "the reader went on before the page was placed");
        setup.Memory.Span(gpa & ~(Page - 1), (int)Page).Fill(0x5a);
        UserFaultFd.Wake(uffd, pageAddr, Page);
        Assert.True(reader.Wait(T), "the woken reader did not go on");
        Assert.Equal(0x5a, reader.Value);

        Assert.Equal(0UL, fe.PostcopyEnd());
        Assert.Equal(PostcopyPhase.None, dev.Postcopy);
        Assert.Equal(0, dev.PostcopyRegisteredRegions);
        // unregistered: another untouched page reads as zero at once, and no fault is reported
        Assert.True(dev.Memory.TryTranslate(gpa + 2 * (1 << 20), 1, out var w2));
        var after = ReadOnOwnThread(w2);
        Assert.True(after.Wait(T), "a read after POSTCOPY_END stalled");
        Assert.Equal(0, after.Value);
        Assert.Null(UserFaultFd.ReadFault(uffd, 0));
        Assert.Empty(be.Logs.Errors);
    }

    [Fact]
    public void AddMemRegRepliesOneRegionEachAndRegistersAfterTheAck()
    {
        using var be = new TestBackEnd(extraProtocolFeatures: PagefaultBit);
        using var fe = be.Connect();
        using var mem = new FrontEndMemory();
        var a = mem.AddRegion(0x10_0000, 4 << 20);
        var b = mem.AddRegion(0x100_0000, 4 << 20, uva: 0x7f10_0000_0000);
        using var setup = new DeviceSetup(fe, Options(memSlots: true), mem);
        setup.Negotiate();
        var dev = OnlyDevice(be);
        using var uffd = fe.PostcopyAdvise();
        Assert.NotNull(uffd);
        Assert.Equal(0UL, fe.PostcopyListen());

        var ra = fe.AddMemRegPostcopy(a);
        var rb = fe.AddMemRegPostcopy(b);
        Assert.Equal(a.GuestPhysAddr, ra.GuestPhysAddr);
        Assert.Equal(b.GuestPhysAddr, rb.GuestPhysAddr);
        Assert.NotEqual(a.UserAddr, ra.UserAddr);
        Assert.NotEqual(b.UserAddr, rb.UserAddr);
        Assert.Equal(0, dev.Memory.Count);
        // QEMU acknowledges the batch once, under the last request it sent
        fe.PostcopyMemoryAck(VhostUserRequest.AddMemReg);
        fe.GetFeatures();
        Assert.Equal(2, dev.Memory.Count);
        Assert.Equal(2, dev.PostcopyRegisteredRegions);
        Assert.True(dev.Memory.TryTranslate(b.GuestPhysAddr, 1, out var w));
        Assert.Equal(rb.UserAddr, (ulong)w.Address);

        var reader = ReadOnOwnThread(w);
        Assert.Equal((ulong)w.Address, UserFaultFd.ReadFault(uffd, (int)T.TotalMilliseconds) & ~(Page - 1));
        mem.Span(b.GuestPhysAddr, 1)[0] = 7;
        UserFaultFd.Wake(uffd, (ulong)w.Address, Page);
        Assert.True(reader.Wait(T));
        Assert.Equal(7, reader.Value);
        Assert.Equal(0UL, fe.PostcopyEnd());
        Assert.Empty(be.Logs.Errors);
    }

    [Fact]
    public void ClosingTheConnectionFreesAThreadStalledOnAFault()
    {
        using var be = new TestBackEnd(extraProtocolFeatures: PagefaultBit);
        var fe = be.Connect();
        using var setup = new DeviceSetup(fe, Options());
        setup.Negotiate();
        var dev = OnlyDevice(be);
        // the test front-end keeps its copy of the userfaultfd open, as a QEMU that stopped answering would
        using var uffd = fe.PostcopyAdvise();
        Assert.Equal(0UL, fe.PostcopyListen());
        fe.SetMemTablePostcopy(setup.Memory);
        fe.GetFeatures();
        var memory = dev.Memory;
        Assert.True(memory.TryAcquire());
        try
        {
            Assert.True(memory.TryTranslate(setup.Memory.Regions[0].GuestPhysAddr + (4 << 20), 1, out var w));
            var reader = ReadOnOwnThread(w);
            Assert.NotNull(UserFaultFd.ReadFault(uffd!, (int)T.TotalMilliseconds));
            Assert.False(reader.IsCompleted);
            fe.Dispose();
            Assert.True(reader.Wait(T), "a thread stayed stalled on a fault after its connection closed");
            Assert.Equal(0, reader.Value);
        }
        finally
        {
            memory.Release();
        }
    }

    // ---- refusals: one clear error line each, and the device goes on answering ----

    private static void AssertRefusedWith(TestBackEnd be, TestFrontEnd fe, string phrase)
    {
        Assert.True(be.Logs.WaitForError(phrase), $"no error line containing '{phrase}'; errors: {string.Join(" | ", be.Logs.Errors)}");
        Assert.NotEqual(0UL, fe.GetFeatures());
    }

    [Fact]
    public void WithoutThePagefaultFeatureEveryPostcopyMessageIsRefused()
    {
        // offered but not negotiated
        using var be = new TestBackEnd(extraProtocolFeatures: PagefaultBit);
        using var fe = be.Connect();
        using var setup = new DeviceSetup(fe, new DeviceSetupOptions());
        setup.Negotiate();
        Assert.Equal(0UL, setup.AckedProtocolFeatures & PagefaultBit);
        var dev = OnlyDevice(be);
        Assert.Null(fe.PostcopyAdvise());
        AssertRefusedWith(be, fe, "POSTCOPY_ADVISE without VHOST_USER_PROTOCOL_F_PAGEFAULT");
        Assert.NotEqual(0UL, fe.PostcopyListen());
        AssertRefusedWith(be, fe, "POSTCOPY_LISTEN without VHOST_USER_PROTOCOL_F_PAGEFAULT");
        Assert.NotEqual(0UL, fe.PostcopyEnd());
        AssertRefusedWith(be, fe, "POSTCOPY_END without POSTCOPY_ADVISE");
        Assert.Equal(PostcopyPhase.None, dev.Postcopy);
    }

    [Fact]
    public void TheBitIsOfferedByDefault()
    {
        // with pre-copy logging, QEMU's postcopy needs only this bit ("vhost-user backend not capable of postcopy" without it)
        using var be = new TestBackEnd();
        using var fe = be.Connect();
        using var setup = new DeviceSetup(fe, Options());
        setup.Negotiate();
        Assert.NotEqual(0UL, setup.OfferedProtocolFeatures & PagefaultBit);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void MessagesOutOfOrderAreRefused(bool replyAck)
    {
        using var be = new TestBackEnd(extraProtocolFeatures: PagefaultBit);
        using var fe = be.Connect();
        using var setup = new DeviceSetup(fe, Options(replyAck: replyAck));
        setup.Negotiate();
        var dev = OnlyDevice(be);
        Assert.NotEqual(0UL, fe.PostcopyListen());
        AssertRefusedWith(be, fe, "POSTCOPY_LISTEN before POSTCOPY_ADVISE");
        Assert.NotEqual(0UL, fe.PostcopyEnd());
        AssertRefusedWith(be, fe, "POSTCOPY_END without POSTCOPY_ADVISE");

        using var uffd = fe.PostcopyAdvise();
        Assert.NotNull(uffd);
        Assert.Null(fe.PostcopyAdvise());
        AssertRefusedWith(be, fe, "POSTCOPY_ADVISE while postcopy is already Advised");
        Assert.Equal(0UL, fe.PostcopyListen());
        Assert.NotEqual(0UL, fe.PostcopyListen());
        AssertRefusedWith(be, fe, "POSTCOPY_LISTEN twice");
        // END after a refused step still ends cleanly
        Assert.Equal(0UL, fe.PostcopyEnd());
        Assert.Equal(PostcopyPhase.None, dev.Postcopy);
    }

    [Fact]
    public void ListenWithMemoryAlreadyMappedIsRefused()
    {
        using var be = new TestBackEnd(extraProtocolFeatures: PagefaultBit);
        using var fe = be.Connect();
        using var setup = new DeviceSetup(fe, Options());
        setup.Negotiate();
        setup.SendMemTable();
        var dev = OnlyDevice(be);
        using var uffd = fe.PostcopyAdvise();
        Assert.NotEqual(0UL, fe.PostcopyListen());
        AssertRefusedWith(be, fe, "POSTCOPY_LISTEN with 1 memory regions already mapped");
        Assert.Equal(PostcopyPhase.Advised, dev.Postcopy);
    }

    [Fact]
    public void AnotherMessageWhereTheAckIsDueClosesTheConnection()
    {
        using var be = new TestBackEnd(extraProtocolFeatures: PagefaultBit);
        using var fe = be.Connect();
        using var setup = new DeviceSetup(fe, Options());
        setup.Negotiate();
        var dev = OnlyDevice(be);
        using var uffd = fe.PostcopyAdvise();
        Assert.Equal(0UL, fe.PostcopyListen());
        fe.SetMemTablePostcopy(setup.Memory, acknowledge: false);
        fe.Send(VhostUserRequest.SetVringNum, VhostUserPayload.VringState(0, 64));
        Assert.True(fe.IsClosedByPeer(T), "the back-end went on without the acknowledgement");
        Assert.True(be.Logs.WaitForError("acknowledgement of our postcopy memory reply is due"));
        Assert.Equal(0, dev.PostcopyRegisteredRegions);
    }

    [Fact]
    public void AFailedAckClosesTheConnectionWithNothingRegistered()
    {
        using var be = new TestBackEnd(extraProtocolFeatures: PagefaultBit);
        using var fe = be.Connect();
        using var setup = new DeviceSetup(fe, Options());
        setup.Negotiate();
        var dev = OnlyDevice(be);
        using var uffd = fe.PostcopyAdvise();
        Assert.Equal(0UL, fe.PostcopyListen());
        fe.SetMemTablePostcopy(setup.Memory, acknowledge: false);
        fe.PostcopyMemoryAck(VhostUserRequest.SetMemTable, status: 1);
        Assert.True(fe.IsClosedByPeer(T));
        Assert.True(be.Logs.WaitForError("could not take our postcopy memory reply"));
        Assert.Equal(0, dev.PostcopyRegisteredRegions);
        Assert.Equal(0, dev.Memory.Count);
    }
}
