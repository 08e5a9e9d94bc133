using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using Vhost.Blk;
using Vhost.Rings;
using Vhost.Testing.BackEnd;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;
using Vhost.Transport;

namespace Vhost.Blk.Tests;

/// <summary>A blk device on a real socket, a test front-end driving queue 0 like a guest driver.</summary>
internal sealed class BlkRig : IDisposable
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(5);
    public readonly CapturingLoggerProvider Logs = new();
    public readonly BlkDevice Device;
    public readonly VhostUserSocket Socket;
    public readonly TestFrontEnd Fe;
    public readonly DeviceSetup Setup;
    public readonly DriverRing Ring;
    private readonly ILoggerFactory _lf;

    public BlkRig(bool readOnly = false, bool packed = false, bool workers = true, long size = 1 << 20)
    {
        _lf = LoggerFactory.Create(b => b.AddProvider(Logs).SetMinimumLevel(LogLevel.Debug));
        Device = new BlkDevice(new MemoryStorage(size, readOnly), 1, _lf.CreateLogger("blk")) { StartWorkers = workers };
        var path = TestFrontEndListener.TempPath();
        Socket = new VhostUserSocket(Device.Options(path, false, _lf));
        Socket.Start();
        Fe = TestFrontEnd.Connect(path, T);
        Setup = DeviceSetup.Run(Fe, new DeviceSetupOptions { QueueCount = 1, QueueSize = 64, Packed = packed });
        Ring = DriverRing.Create(Setup[0], Setup.Memory);
    }

    public ulong Header(uint type, ulong sector)
    {
        ulong g = Setup.Memory.Allocate(16);
        var s = Setup.Memory.Span(g, 16);
        s.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(s, type);
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], sector);
        return g;
    }

    public ulong Buffer(int len, byte fill = 0)
    {
        ulong g = Setup.Memory.Allocate((ulong)Math.Max(len, 1));
        Setup.Memory.Span(g, len).Fill(fill);
        return g;
    }

    public UsedElement Submit(params DriverBuffer[] bufs)
    {
        Ring.Add(bufs);
        Setup[0].Kick();
        return Ring.WaitUsed(T);
    }

    /// <summary>A standard request: header, data (readable for OUT-like, writable for IN-like), status.</summary>
    public (byte Status, UsedElement Used, ulong Data, ulong StatusGpa) Request(uint type, ulong sector, int dataLen, bool dataWritable, byte fill = 0)
    {
        ulong h = Header(type, sector), d = Buffer(dataLen, fill), st = Buffer(1, 0xff);
        var used = dataLen > 0
            ? Submit(new DriverBuffer(h, 16, false), new DriverBuffer(d, (uint)dataLen, dataWritable), new DriverBuffer(st, 1, true))
            : Submit(new DriverBuffer(h, 16, false), new DriverBuffer(st, 1, true));
        return (Setup.Memory.Span(st, 1)[0], used, d, st);
    }

    public byte Write(ulong sector, int len, byte fill) => Request(BlkRequest.Out, sector, len, false, fill).Status;

    public (byte Status, byte[] Data) Read(ulong sector, int len)
    {
        var r = Request(BlkRequest.In, sector, len, true);
        return (r.Status, Setup.Memory.Span(r.Data, len).ToArray());
    }

    public bool Logged(string text) => Logs.Lines.Any(l => l.Level >= LogLevel.Warning && l.Text.Contains(text, StringComparison.Ordinal));

    public void Dispose()
    {
        Setup.Dispose();
        Fe.Dispose();
        Socket.Dispose();
        Device.Dispose();
        _lf.Dispose();
    }
}

public sealed class BlkDeviceTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void WriteThenReadReturnsTheData(bool packed)
    {
        using var rig = new BlkRig(packed: packed);
        Assert.Equal(BlkRequest.StatusOk, rig.Write(8, 4096, 0x5a));
        var (st, data) = rig.Read(8, 4096);
        Assert.Equal(BlkRequest.StatusOk, st);
        Assert.All(data, b => Assert.Equal(0x5a, b));
        var (st2, before) = rig.Read(7, 512);
        Assert.Equal(BlkRequest.StatusOk, st2);
        Assert.All(before, b => Assert.Equal(0, b));
    }

    [Fact]
    public void ReadReportsDataPlusStatusAsWritten()
    {
        using var rig = new BlkRig();
        var r = rig.Request(BlkRequest.In, 0, 1024, true);
        Assert.Equal(1025u, r.Used.Length);
    }

    [Fact]
    public void FlushSucceeds()
    {
        using var rig = new BlkRig();
        Assert.Equal(BlkRequest.StatusOk, rig.Request(BlkRequest.Flush, 0, 0, false).Status);
    }

    [Fact]
    public void GetIdReturnsTheSerial()
    {
        using var rig = new BlkRig();
        var r = rig.Request(BlkRequest.GetId, 0, 20, true);
        Assert.Equal(BlkRequest.StatusOk, r.Status);
        Assert.StartsWith("vhost-dotnet", System.Text.Encoding.ASCII.GetString(rig.Setup.Memory.Span(r.Data, 20)));
    }

    private static ulong Segments(BlkRig rig, int count, ulong sector, uint num, uint flags = 0)
    {
        ulong g = rig.Buffer(count * 16);
        var s = rig.Setup.Memory.Span(g, count * 16);
        for (int i = 0; i < count; i++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(s[(i * 16)..], sector + (ulong)i * num);
            BinaryPrimitives.WriteUInt32LittleEndian(s[(i * 16 + 8)..], num);
            BinaryPrimitives.WriteUInt32LittleEndian(s[(i * 16 + 12)..], flags);
        }
        return g;
    }

    [Theory]
    [InlineData(BlkRequest.Discard)]
    [InlineData(BlkRequest.WriteZeroes)]
    public void DiscardAndWriteZeroesZeroTheRange(uint type)
    {
        using var rig = new BlkRig();
        Assert.Equal(BlkRequest.StatusOk, rig.Write(0, 8192, 0x77));
        ulong h = rig.Header(type, 0), segs = Segments(rig, 2, 2, 2), st = rig.Buffer(1, 0xff);
        rig.Submit(new DriverBuffer(h, 16, false), new DriverBuffer(segs, 32, false), new DriverBuffer(st, 1, true));
        Assert.Equal(BlkRequest.StatusOk, rig.Setup.Memory.Span(st, 1)[0]);
        var (_, data) = rig.Read(0, 8192);
        Assert.All(data.AsSpan(0, 1024).ToArray(), b => Assert.Equal(0x77, b));
        Assert.All(data.AsSpan(1024, 2048).ToArray(), b => Assert.Equal(0, b));
        Assert.All(data.AsSpan(3072).ToArray(), b => Assert.Equal(0x77, b));
    }

    [Fact]
    public void UnknownTypeIsUnsupported()
    {
        using var rig = new BlkRig();
        Assert.Equal(BlkRequest.StatusUnsupp, rig.Request(99, 0, 0, false).Status);
        Assert.Equal(BlkRequest.StatusOk, rig.Write(0, 512, 1));
    }

    // ---- hostile requests: each fails alone, is logged, and the next good request is served ----

    private static void StillServes(BlkRig rig)
    {
        Assert.Equal(BlkRequest.StatusOk, rig.Write(1, 512, 0x42));
        Assert.Equal(0x42, rig.Read(1, 512).Data[0]);
    }

    [Fact]
    public void ReadBeyondCapacityFails()
    {
        using var rig = new BlkRig(size: 1 << 20);
        Assert.Equal(BlkRequest.StatusIoErr, rig.Read(2047, 1024).Status);
        Assert.Equal(BlkRequest.StatusIoErr, rig.Read(ulong.MaxValue, 512).Status);
        Assert.True(rig.Logged("beyond capacity"));
        StillServes(rig);
    }

    [Fact]
    public void LengthNotMultipleOf512Fails()
    {
        using var rig = new BlkRig();
        Assert.Equal(BlkRequest.StatusIoErr, rig.Write(0, 500, 1));
        Assert.True(rig.Logged("multiple of 512"));
        StillServes(rig);
    }

    [Fact]
    public void MissingStatusDescriptorIsDroppedAndLogged()
    {
        using var rig = new BlkRig();
        ulong h = rig.Header(BlkRequest.Out, 0), d = rig.Buffer(512, 9);
        var used = rig.Submit(new DriverBuffer(h, 16, false), new DriverBuffer(d, 512, false));
        Assert.Equal(0u, used.Length);
        Assert.True(rig.Logged("no writable status byte"));
        Assert.Equal(0, rig.Read(0, 512).Data[0]); // the write did not happen
        StillServes(rig);
    }

    [Fact]
    public void ReadOnlyStatusDescriptorIsDroppedAndLogged()
    {
        using var rig = new BlkRig();
        ulong h = rig.Header(BlkRequest.In, 0), st = rig.Buffer(1, 0xee);
        var used = rig.Submit(new DriverBuffer(h, 16, false), new DriverBuffer(st, 1, false));
        Assert.Equal(0u, used.Length);
        Assert.Equal(0xee, rig.Setup.Memory.Span(st, 1)[0]); // nothing written into a device-readable buffer
        Assert.True(rig.Logged("no writable status byte"));
        StillServes(rig);
    }

    [Fact]
    public void SmallGetIdBufferFails()
    {
        using var rig = new BlkRig();
        Assert.Equal(BlkRequest.StatusIoErr, rig.Request(BlkRequest.GetId, 0, 8, true).Status);
        Assert.True(rig.Logged("GET_ID buffer"));
        StillServes(rig);
    }

    [Fact]
    public void TooManyDiscardSegmentsFail()
    {
        using var rig = new BlkRig();
        Assert.Equal(BlkRequest.StatusOk, rig.Write(0, 512, 0x33));
        int n = BlkDevice.MaxDiscardSegments + 1;
        ulong h = rig.Header(BlkRequest.Discard, 0), segs = Segments(rig, n, 0, 1), st = rig.Buffer(1, 0xff);
        rig.Submit(new DriverBuffer(h, 16, false), new DriverBuffer(segs, (uint)(n * 16), false), new DriverBuffer(st, 1, true));
        Assert.Equal(BlkRequest.StatusIoErr, rig.Setup.Memory.Span(st, 1)[0]);
        Assert.True(rig.Logged("too many"));
        Assert.Equal(0x33, rig.Read(0, 512).Data[0]); // nothing was discarded
        StillServes(rig);
    }

    [Fact]
    public void WriteOnReadOnlyDeviceFails()
    {
        using var rig = new BlkRig(readOnly: true);
        Assert.Equal(BlkRequest.StatusIoErr, rig.Write(0, 512, 1));
        Assert.True(rig.Logged("read-only"));
        var (st, data) = rig.Read(0, 512);
        Assert.Equal(BlkRequest.StatusOk, st);
        Assert.Equal(0, data[0]);
    }

    [Fact]
    public void ConfigSpaceDescribesTheDiskAndWceToggles()
    {
        using var rig = new BlkRig(size: 4 << 20);
        var c = rig.Fe.GetConfig(0, BlkDevice.ConfigSize)!;
        var bytes = c.Data.ToArray();
        Assert.Equal(8192ul, BinaryPrimitives.ReadUInt64LittleEndian(bytes));
        Assert.Equal(512u, BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(20)));
        Assert.Equal((uint)BlkDevice.SegMax, BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(12)));
        Assert.Equal(1, bytes[32]);
        rig.Fe.SetConfig(32, [0], needReply: true);
        Assert.Equal(0, rig.Fe.GetConfig(32, 1)!.Data.ToArray()[0]);
        StillServes(rig);
    }

    [Fact]
    public void BurstsAllocateNothing()
    {
        using var rig = new BlkRig(workers: false);
        var q = rig.Socket.Devices[0].Queue(0);
        var chains = new DescriptorChain[32];
        var segs = new BufferSegment[32 * 130];
        ulong h = rig.Header(BlkRequest.Out, 4), d = rig.Buffer(4096, 3), st = rig.Buffer(1);
        ulong hr = rig.Header(BlkRequest.In, 4), dr = rig.Buffer(4096), str = rig.Buffer(1);
        void Round()
        {
            rig.Ring.Add(new DriverBuffer(h, 16, false), new DriverBuffer(d, 4096, false), new DriverBuffer(st, 1, true));
            rig.Ring.Add(new DriverBuffer(hr, 16, false), new DriverBuffer(dr, 4096, true), new DriverBuffer(str, 1, true));
        }
        // warm up: first touches allocate the RAM-disk chunk and JIT the path
        for (int i = 0; i < 4; i++) { Round(); while (rig.Device.ProcessBurst(q, chains, segs) == 0) { } rig.Ring.WaitUsed(TimeSpan.FromSeconds(5)); rig.Ring.WaitUsed(TimeSpan.FromSeconds(5)); }
        int served = 0;
        for (int i = 0; i < 16; i++)
        {
            Round();
            long before = GC.GetAllocatedBytesForCurrentThread();
            int n = 0;
            while (n < 2) n += rig.Device.ProcessBurst(q, chains, segs);
            long after = GC.GetAllocatedBytesForCurrentThread();
            Assert.Equal(0, after - before);
            served += n;
            rig.Ring.WaitUsed(TimeSpan.FromSeconds(5));
            rig.Ring.WaitUsed(TimeSpan.FromSeconds(5));
        }
        Assert.Equal(32, served);
        Assert.Equal(3, rig.Setup.Memory.Span(dr, 1)[0]);
    }
}
