using Vhost.Interop;
using Vhost.Memory;
using Vhost.Protocol;
using Vhost.Rings;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;

namespace Vhost.Tests.Hostile;

[Collection(HostileCollection.Name)]
public sealed class MemoryTableTests
{
    /// <summary>Negotiates on a fresh hostile connection, runs <paramref name="act"/>, then checks the rest of the case.</summary>
    private static void Case(string phrase, Action<Scene, TestFrontEnd, FrontEndMemory> act)
    {
        using var s = new Scene();
        using (var fe = s.Connect())
        using (var mem = new FrontEndMemory())
        {
            new DeviceSetup(fe, memory: mem).Negotiate();
            act(s, fe, mem);
            // a refused table leaves no memory behind (cases that close the connection have no device left)
            // (32: the slots case, whose 32 regions before the refused one were legal)
            var dev = s.Be.Socket.Devices.FirstOrDefault(d => d != s.Good);
            if (dev != null && dev.Memory.Count is not (0 or 32)) Assert.Fail($"{dev.Memory.Count} regions mapped after the refusal");
        }
        s.AssertOneError(phrase);
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void ZeroRegions() =>
        Case("SET_MEM_TABLE with no regions", (_, fe, _) => Scene.AssertNack(fe.SetMemTable([], [], needReply: true)));

    [Fact]
    public void ZeroSizedRegion() =>
        Case("region size is zero", (_, fe, mem) =>
        {
            mem.AddRegionWithFd(new MemoryRegionInfo(0x10_0000, 0, 0x7f00_0010_0000, 0), FileDescriptors.CreateMemFd("vhost-zero", 4096));
            Scene.AssertNack(fe.SetMemTable(mem, needReply: true));
        });

    [Fact]
    public void OverlappingRegions() =>
        Case("regions overlap in guest physical space", (_, fe, mem) =>
        {
            mem.AddRegion(0x10_0000, 1 << 20);
            mem.AddRegion(0x18_0000, 1 << 20, uva: 0x7f10_0000_0000);
            Scene.AssertNack(fe.SetMemTable(mem, needReply: true));
        });

    [Fact]
    public void OverlappingInFrontEndAddressSpace() =>
        Case("regions overlap in front-end address space", (_, fe, mem) =>
        {
            mem.AddRegion(0x10_0000, 1 << 20, uva: 0x7f00_0000_0000);
            mem.AddRegion(0x100_0000, 1 << 20, uva: 0x7f00_0008_0000);
            Scene.AssertNack(fe.SetMemTable(mem, needReply: true));
        });

    [Fact]
    public void WrappingRegion() =>
        Case("guest physical range wraps", (_, fe, mem) =>
        {
            mem.AddRegionWithFd(new MemoryRegionInfo(0xffff_ffff_ffff_f000, 0x2000, 0x7f00_0000_0000, 0), FileDescriptors.CreateMemFd("vhost-wrap", 0x2000));
            Scene.AssertNack(fe.SetMemTable(mem, needReply: true));
        });

    [Fact]
    public void MoreThanEightRegionsClaimed() =>
        Case("SET_MEM_TABLE with 9 regions (at most 8)", (_, fe, mem) =>
        {
            for (int i = 0; i < 8; i++) mem.AddRegion(0x10_0000 + (ulong)i * 0x10_0000, 4096);
            var (infos, fds) = mem.Describe();
            fe.SendWithFds(VhostUserRequest.SetMemTable, VhostUserPayload.MemoryTable(infos, claimedCount: 9), fds, needReply: true);
            Scene.AssertClosed(fe);
        });

    [Fact]
    public void MoreRegionsThanSlots() =>
        Case("ADD_MEM_REG beyond the 32 memory slots", (s, fe, mem) =>
        {
            for (int i = 0; i < 32; i++)
                Assert.Equal(0UL, fe.AddMemReg(mem.AddRegion(0x10_0000 + (ulong)i * 0x10_0000, 4096), needReply: true));
            Scene.AssertNack(fe.AddMemReg(mem.AddRegion(0x1_0000_0000, 4096), needReply: true));
            Assert.Equal(32, s.WaitOtherDevice().Memory.Count);
            fe.Dispose(); // the device had regions: closing must unmap all 32
            s.WaitOtherDeviceGone();
        });

    [Fact]
    public void RegionLargerThanItsFdMustNotSigbus() =>
        Case("region needs 1048576 bytes of its fd but the fd has 4096", (_, fe, mem) =>
        {
            mem.AddShortRegion(0x10_0000, 1 << 20, 4096);
            Scene.AssertNack(fe.SetMemTable(mem, needReply: true));
        });

    [Fact]
    public void MmapOffsetBeyondTheFd() =>
        Case("region needs", (_, fe, mem) =>
        {
            mem.AddShortRegion(0x10_0000, 4096, 4096, mmapOffset: 1 << 30);
            Scene.AssertNack(fe.SetMemTable(mem, needReply: true));
        });

    [Fact]
    public void MmapOffsetThatWraps() =>
        Case("mmap offset plus size wraps", (_, fe, mem) =>
        {
            mem.AddShortRegion(0x10_0000, 0x2000, 4096, mmapOffset: 0xffff_ffff_ffff_f000);
            Scene.AssertNack(fe.SetMemTable(mem, needReply: true));
        });

    [Fact]
    public void AddMemRegWithAShortFd() =>
        Case("ADD_MEM_REG", (_, fe, mem) =>
        {
            var r = mem.AddShortRegion(0x10_0000, 1 << 20, 4096);
            Scene.AssertNack(fe.AddMemReg(r, needReply: true));
        });

    /// <summary>
    /// The front-end truncates its memory file after SET_MEM_TABLE, and the application then writes into a
    /// buffer past the new end: that would be SIGBUS and the end of the process. The write lands on a zero page,
    /// the device is dropped with a clear error, and the other device keeps working.
    /// </summary>
    [Fact]
    public void MemoryFileShrunkAfterMappingDropsOnlyThatDevice()
    {
        using var s = new Scene();
        var (fe, setup, dev, ring) = s.BringUp(packed: false);
        using (fe)
        using (setup)
        {
            setup.Memory.Allocate(8 << 20);
            ulong buf = setup.Memory.Allocate(4096, 4096);
            Assert.True(buf >= 8 << 20);
            ring.Add(new DriverBuffer(buf, 4096, true));
            FileDescriptors.Truncate(setup.Memory.Regions[0].Fd, 1 << 20);
            var q = dev.Queue(0);
            var chains = new DescriptorChain[1];
            var segs = new BufferSegment[4];
            using (q.AccessLock.EnterScope())
            {
                Assert.Equal(1, q.Pop(chains, segs));
                segs[0].Window.Span(0, 4096).Fill(0x5a);
                q.PushUsed(chains[0], 4096);
                q.FlushUsed();
            }
            Scene.AssertClosed(fe);
        }
        s.AssertOneError("shrank under its mapping");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void RemovingARegionTheRingsUse()
    {
        using var s = new Scene();
        var (fe, setup, dev, _) = s.BringUp(packed: false);
        using (fe)
        using (setup)
        {
            Scene.AssertNack(fe.RemMemReg(setup.Memory.Regions[0].Info, needReply: true));
            Assert.True(dev.IsRunning);
            Assert.Equal(1, dev.Memory.Count);
        }
        s.AssertOneError("has its rings there");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }

    [Fact]
    public void RemovingARegionThatDoesNotExist()
    {
        using var s = new Scene();
        var (fe, setup, dev, _) = s.BringUp(packed: false);
        using (fe)
        using (setup)
        {
            Scene.AssertNack(fe.RemMemReg(new MemoryRegionInfo(0x4000_0000, 4096, 0, 0), needReply: true));
            Assert.True(dev.IsRunning);
        }
        s.AssertOneError("no such region");
        s.AssertReleased();
        s.AssertGoodDeviceWorks();
    }
}
