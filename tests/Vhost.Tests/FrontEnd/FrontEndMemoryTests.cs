using Vhost.Interop;
using Vhost.Memory;
using Vhost.Testing.FrontEnd;

namespace Vhost.Tests.FrontEnd;

public class FrontEndMemoryTests
{
    [Fact]
    public void Uva_differs_from_gpa_by_the_default_offset_and_maps_back()
    {
        using var mem = FrontEndMemory.Create(0x10000, gpa: 0x20000);
        var r = Assert.Single(mem.Regions);
        Assert.Equal(new MemoryRegionInfo(0x20000, 0x10000, 0x20000 + FrontEndMemory.DefaultUvaOffset, 0), r.Info);
        Assert.Equal(0x7f00_0002_0123UL, mem.Uva(0x20123));
        Assert.Equal(0x20123UL, mem.Gpa(0x7f00_0002_0123));
        Assert.Throws<ArgumentOutOfRangeException>(() => mem.Uva(0x10000));
    }

    [Fact]
    public void Allocate_aligns_bumps_and_spills_into_the_next_region()
    {
        using var mem = new FrontEndMemory();
        mem.AddRegion(0x1000, 0x2000);
        mem.AddRegion(0x100000, 0x10000);
        Assert.Equal(0x1000UL, mem.Allocate(10));
        Assert.Equal(0x1010UL, mem.Allocate(4, align: 16));
        Assert.Equal(0x2000UL, mem.Allocate(0x100, align: 0x1000));
        // Does not fit what is left of region 0 (0x2100..0x3000): goes to region 1.
        Assert.Equal(0x100000UL, mem.Allocate(0x1000, align: 0x1000));
        Assert.Equal(0x2100UL, mem.Allocate(0x10));
        Assert.Throws<InvalidOperationException>(() => mem.Allocate(0x20000));
        Assert.Throws<ArgumentOutOfRangeException>(() => mem.Allocate(8, align: 3));
    }

    [Fact]
    public void Window_writes_land_in_the_memfd_at_the_mmap_offset()
    {
        using var mem = new FrontEndMemory();
        var r = mem.AddRegion(0x4000, 0x1000, mmapOffset: 0x2000);
        Assert.True(FileDescriptors.TryStat(r.Fd, out var st));
        Assert.True(st.IsRegular);
        Assert.Equal(0x3000, st.Size);

        mem.Span(0x4010, 4).Fill(0x5a);
        // A second, independent mapping of the fd sees the bytes where the back-end would: offset + 0x10.
        using var other = MemoryMapping.Map(r.Fd, 0x3000);
        Assert.Equal(new byte[] { 0, 0x5a, 0x5a, 0x5a, 0x5a, 0 }, other.Window.Span(0x200f, 6).ToArray());
    }

    [Fact]
    public void Window_refuses_ranges_outside_one_mapped_region()
    {
        using var mem = new FrontEndMemory();
        mem.AddRegion(0, 0x1000);
        mem.AddRegion(0x1000, 0x1000);
        Assert.Equal(0x10UL, mem.Window(0xff0, 0x10).Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => mem.Window(0xff0, 0x20)); // straddles two regions
        Assert.Throws<ArgumentOutOfRangeException>(() => mem.Window(0x2000, 1));
    }

    [Fact]
    public void Uva_at_a_boundary_belongs_to_the_region_that_starts_there()
    {
        using var mem = new FrontEndMemory();
        mem.AddRegion(0, 0x1000, uva: 0x10_0000);
        mem.AddRegion(0x1000, 0x1000, uva: 0x50_0000);
        Assert.Equal(0x50_0000UL, mem.Uva(0x1000));
        Assert.Equal(0x1000UL, mem.Gpa(0x50_0000));
    }

    [Fact]
    public void Hostile_regions_are_described_but_not_mapped()
    {
        using var mem = new FrontEndMemory();
        var good = mem.AddRegion(0, 0x1000);
        var shortFd = mem.AddShortRegion(0x10000, claimedSize: 0x10000, actualFdSize: 0x1000);
        var pipe = mem.AddPipeRegion(0x40000, 0x1000);
        var sock = mem.AddSocketRegion(0x80000, 0x1000);

        Assert.True(FileDescriptors.TryStat(shortFd.Fd, out var st) && st.IsRegular && st.Size == 0x1000);
        Assert.Equal(0x10000UL, shortFd.Info.Size);
        Assert.True(FileDescriptors.TryStat(pipe.Fd, out st) && !st.IsRegular);
        Assert.True(FileDescriptors.TryStat(sock.Fd, out st) && !st.IsRegular);
        Assert.False(shortFd.IsMapped);
        Assert.Throws<InvalidOperationException>(() => pipe.Window);
        Assert.Throws<ArgumentOutOfRangeException>(() => mem.Window(0x10000, 1));

        // Allocation only ever uses honest memory.
        Assert.Equal(0UL, mem.Allocate(0x1000));
        Assert.Throws<InvalidOperationException>(() => mem.Allocate(1));

        var (infos, fds) = mem.Describe();
        Assert.Equal(4, infos.Length);
        Assert.Equal([good.Fd, shortFd.Fd, pipe.Fd, sock.Fd], fds);
    }

    [Fact]
    public void Remove_disposes_the_region()
    {
        using var mem = new FrontEndMemory();
        var r = mem.AddRegion(0, 0x1000);
        Assert.True(mem.Remove(r));
        Assert.True(r.Fd.IsClosed);
        Assert.Empty(mem.Regions);
        Assert.False(mem.Remove(r));
    }
}
