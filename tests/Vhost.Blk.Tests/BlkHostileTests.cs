using Vhost.Testing.Rings;

namespace Vhost.Blk.Tests;

/// <summary>Requests an untrusted driver may send: each is refused with a status and a log line, and the next good request works.</summary>
public sealed class BlkHostileTests
{
    [Fact]
    public void SectorBeyondCapacity()
    {
        using var h = new BlkHarness(capacity: 1 << 20);
        Assert.Equal((byte)BlkStatus.IoErr, h.Write(2047, new byte[1024]));
        Assert.Equal((byte)BlkStatus.IoErr, h.Read(ulong.MaxValue - 1, 512).Status);
        Assert.True(h.Logged("sector range beyond capacity"));
        Assert.Equal(2, h.Blk.TotalStats().Invalid);
        h.AssertStillServes();
    }

    [Fact]
    public void LengthNotMultipleOf512()
    {
        using var h = new BlkHarness();
        Assert.Equal((byte)BlkStatus.IoErr, h.Write(0, new byte[700]));
        Assert.Equal((byte)BlkStatus.IoErr, h.Read(0, 100).Status);
        Assert.True(h.Logged("not a multiple of 512"));
        h.AssertStillServes();
    }

    [Fact]
    public void MissingStatusDescriptor()
    {
        using var h = new BlkHarness();
        ulong hdr = h.Header(BlkRequestType.Out, 0), d = h.Alloc(512);
        var u = h.Run(new DriverBuffer(hdr, 16, false), new DriverBuffer(d, 512, false));
        Assert.Equal(0u, u.Length);
        Assert.True(h.Logged("no device-writable status byte"));
        Assert.Equal(0, h.Blk.TotalStats().Writes);
        h.AssertStillServes();
    }

    [Fact]
    public void ReadOnlyStatusDescriptor()
    {
        using var h = new BlkHarness();
        ulong hdr = h.Header(BlkRequestType.Flush, 0), s = h.Alloc(1);
        h.Span(s, 1)[0] = 0xee;
        var u = h.Run(new DriverBuffer(hdr, 16, false), new DriverBuffer(s, 1, false));
        Assert.Equal(0u, u.Length);
        Assert.Equal(0xee, h.Span(s, 1)[0]);
        Assert.True(h.Logged("no device-writable status byte"));
        h.AssertStillServes();
    }

    [Fact]
    public void ShortHeader()
    {
        using var h = new BlkHarness();
        ulong hdr = h.Header(BlkRequestType.In, 0), s = h.Alloc(1);
        h.Run(new DriverBuffer(hdr, 8, false), new DriverBuffer(s, 1, true));
        Assert.Equal((byte)BlkStatus.IoErr, h.Span(s, 1)[0]);
        Assert.True(h.Logged("header shorter than 16 bytes"));
        h.AssertStillServes();
    }

    [Fact]
    public void GetIdBufferTooSmall()
    {
        using var h = new BlkHarness();
        ulong hdr = h.Header(BlkRequestType.GetId, 0), id = h.Alloc(8), s = h.Alloc(1);
        h.Run(new DriverBuffer(hdr, 16, false), new DriverBuffer(id, 8, true), new DriverBuffer(s, 1, true));
        Assert.Equal((byte)BlkStatus.IoErr, h.Span(s, 1)[0]);
        Assert.All(h.Span(id, 8).ToArray(), b => Assert.Equal(0, b));
        Assert.True(h.Logged("GET_ID buffer shorter than 20 bytes"));
        h.AssertStillServes();
    }

    [Fact]
    public void TooManyDiscardSegments()
    {
        using var h = new BlkHarness();
        var data = BlkHarness.Pattern(512, 7);
        Assert.Equal(0, h.Write(0, data));
        var ranges = Enumerable.Range(0, 17).Select(i => ((ulong)i, 1u, 0u)).ToArray();
        Assert.Equal((byte)BlkStatus.Unsupp, h.Command(BlkRequestType.Discard, 0, BlkHarness.Ranges(ranges)));
        Assert.Equal((byte)BlkStatus.Unsupp, h.Command(BlkRequestType.WriteZeroes, 0, BlkHarness.Ranges(ranges)));
        Assert.True(h.Logged("more discard/write-zeroes segments than advertised"));
        // nothing was discarded
        Assert.Equal(data, h.Read(0, 512).Data);
        h.AssertStillServes();
    }

    [Fact]
    public void DiscardRangeBeyondCapacityOrWithUnmapFlag()
    {
        using var h = new BlkHarness(capacity: 1 << 20);
        var data = BlkHarness.Pattern(512, 8);
        Assert.Equal(0, h.Write(0, data));
        // the first range is fine, the second is not: nothing may be applied
        Assert.Equal((byte)BlkStatus.IoErr, h.Command(BlkRequestType.Discard, 0, BlkHarness.Ranges((0, 1, 0), (2040, 16, 0))));
        Assert.Equal((byte)BlkStatus.Unsupp, h.Command(BlkRequestType.Discard, 0, BlkHarness.Ranges((0, 1, 1))));
        Assert.Equal((byte)BlkStatus.IoErr, h.Command(BlkRequestType.Discard, 0, new byte[10]));
        Assert.Equal(data, h.Read(0, 512).Data);
        h.AssertStillServes();
    }

    [Fact]
    public void WriteOnReadOnlyDevice()
    {
        using var h = new BlkHarness(readOnly: true);
        Assert.True(Vhost.Protocol.VirtioFeature.Has(h.Setup.OfferedFeatures, BlkFeature.ReadOnly));
        Assert.Equal((byte)BlkStatus.IoErr, h.Write(0, BlkHarness.Pattern(512, 9)));
        Assert.Equal((byte)BlkStatus.IoErr, h.Command(BlkRequestType.WriteZeroes, 0, BlkHarness.Ranges((0, 1, 0))));
        Assert.Equal((byte)BlkStatus.IoErr, h.Command(BlkRequestType.Discard, 0, BlkHarness.Ranges((0, 1, 0))));
        Assert.True(h.Logged("write to a read-only device"));
        Assert.All(((MemoryDisk)h.Storage).Content.Span(0, 512).ToArray(), b => Assert.Equal(0, b));
        // reads and flushes still work
        var (st, _) = h.Read(0, 512);
        Assert.Equal(0, st);
        Assert.Equal(0, h.Command(BlkRequestType.Flush, 0));
        Assert.True(h.Device.IsRunning);
    }
}
