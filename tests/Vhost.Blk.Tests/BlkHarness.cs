using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using Vhost.Device;
using Vhost.Protocol;
using Vhost.Testing.BackEnd;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;
using Vhost.Transport;

namespace Vhost.Blk.Tests;

/// <summary>A VirtioBlk served on a socket, brought up by the test front-end, with helpers that build requests.</summary>
internal sealed class BlkHarness : IDisposable
{
    public static readonly TimeSpan T = TimeSpan.FromSeconds(10);

    public readonly IBlockStorage Storage;
    public readonly VirtioBlk Blk;
    public readonly CapturingLoggerProvider Logs = new();
    public readonly VhostUserSocket Socket;
    public readonly TestFrontEnd Fe;
    public readonly DeviceSetup Setup;
    public readonly VhostDevice Device;
    public readonly DriverRing[] Rings;
    private readonly ILoggerFactory _lf;

    public BlkHarness(bool packed = false, bool readOnly = false, int queues = 1, IBlockStorage? storage = null, long capacity = 4 << 20, TimeSpan latency = default,
        ushort queueSize = 128, ulong extraProtocolFeatures = 0, ulong dropFeatures = 0, ulong memorySize = 16 << 20)
    {
        Storage = storage ?? new MemoryDisk(capacity, "blk-test-serial");
        _lf = LoggerFactory.Create(b => b.AddProvider(Logs).SetMinimumLevel(LogLevel.Debug));
        Blk = new VirtioBlk(Storage, new VirtioBlkOptions { Queues = queues, ReadOnly = readOnly, LoggerFactory = _lf, SimulatedLatency = latency });
        Socket = new VhostUserSocket(Blk.CreateSocketOptions(TestFrontEndListener.TempPath()));
        Socket.Start();
        Fe = TestFrontEnd.Connect(Socket.Path, T);
        Setup = DeviceSetup.Run(Fe, new DeviceSetupOptions
        {
            Packed = packed,
            QueueCount = queues,
            QueueSize = queueSize,
            MemorySize = memorySize,
            ProtocolFeatures = DeviceSetupOptions.DefaultProtocolFeatures | (1UL << (int)ProtocolFeature.InflightShmfd) | extraProtocolFeatures,
            Features = ~(VirtioFeature.Bit(VirtioFeature.LogAll) | VirtioFeature.Bit(VirtioFeature.AccessPlatform) | (packed ? 0 : VirtioFeature.Bit(VirtioFeature.RingPacked)) | dropFeatures),
        });
        var end = DateTime.UtcNow + T;
        while (Socket.Devices.Count == 0 || !Socket.Devices[0].IsRunning)
        {
            if (DateTime.UtcNow > end) throw new TimeoutException("the blk device never started");
            Thread.Sleep(5);
        }
        Device = Socket.Devices[0];
        Rings = new DriverRing[queues];
        for (int i = 0; i < queues; i++) Rings[i] = DriverRing.Create(Setup[i], Setup.Memory);
    }

    public FrontEndMemory Memory => Setup.Memory;

    public ulong Alloc(int size) => Memory.Allocate((ulong)size, 64);

    public Span<byte> Span(ulong gpa, int size) => Memory.Span(gpa, size);

    /// <summary>A 16-byte request header in guest memory.</summary>
    public ulong Header(BlkRequestType type, ulong sector, ulong? reuse = null)
    {
        ulong gpa = reuse ?? Alloc(16);
        var h = Span(gpa, 16);
        BinaryPrimitives.WriteUInt32LittleEndian(h, (uint)type);
        BinaryPrimitives.WriteUInt32LittleEndian(h[4..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(h[8..], sector);
        return gpa;
    }

    /// <summary>Adds the chain, kicks, and waits for its used element.</summary>
    public UsedElement Run(int queue, params ReadOnlySpan<DriverBuffer> chain)
    {
        ushort id = Rings[queue].Add(chain);
        Setup[queue].Kick();
        var u = Rings[queue].WaitUsed(T);
        Assert.Equal(id, u.Id);
        return u;
    }

    public UsedElement Run(params ReadOnlySpan<DriverBuffer> chain) => Run(0, chain);

    /// <summary>Writes <paramref name="data"/> at <paramref name="sector"/> with a well-formed request; returns the status.</summary>
    public byte Write(ulong sector, ReadOnlySpan<byte> data, int queue = 0)
    {
        ulong h = Header(BlkRequestType.Out, sector);
        ulong d = Alloc(data.Length);
        data.CopyTo(Span(d, data.Length));
        ulong s = Alloc(1);
        Span(s, 1)[0] = 0xff;
        var u = Run(queue, new DriverBuffer(h, 16, false), new DriverBuffer(d, (uint)data.Length, false), new DriverBuffer(s, 1, true));
        Assert.Equal(1u, u.Length);
        return Span(s, 1)[0];
    }

    /// <summary>Reads <paramref name="length"/> bytes at <paramref name="sector"/>; returns status and data.</summary>
    public (byte Status, byte[] Data) Read(ulong sector, int length, int queue = 0)
    {
        ulong h = Header(BlkRequestType.In, sector);
        ulong d = Alloc(length);
        ulong s = Alloc(1);
        Span(s, 1)[0] = 0xff;
        var u = Run(queue, new DriverBuffer(h, 16, false), new DriverBuffer(d, (uint)length, true), new DriverBuffer(s, 1, true));
        byte status = Span(s, 1)[0];
        if (status == 0) Assert.Equal((uint)length + 1, u.Length);
        return (status, Span(d, length).ToArray());
    }

    /// <summary>A request of any type with a readable payload after the header and no data to read back.</summary>
    public byte Command(BlkRequestType type, ulong sector, ReadOnlySpan<byte> payload = default)
    {
        ulong h = Header(type, sector);
        ulong s = Alloc(1);
        Span(s, 1)[0] = 0xff;
        if (payload.IsEmpty)
        {
            Run(new DriverBuffer(h, 16, false), new DriverBuffer(s, 1, true));
        }
        else
        {
            ulong p = Alloc(payload.Length);
            payload.CopyTo(Span(p, payload.Length));
            Run(new DriverBuffer(h, 16, false), new DriverBuffer(p, (uint)payload.Length, false), new DriverBuffer(s, 1, true));
        }
        return Span(s, 1)[0];
    }

    public static byte[] Ranges(params (ulong Sector, uint Count, uint Flags)[] ranges)
    {
        var b = new byte[16 * ranges.Length];
        for (int i = 0; i < ranges.Length; i++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16 * i), ranges[i].Sector);
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(16 * i + 8), ranges[i].Count);
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(16 * i + 12), ranges[i].Flags);
        }
        return b;
    }

    public static byte[] Pattern(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    /// <summary>The device is still serving: a fresh write and read round-trip.</summary>
    public void AssertStillServes()
    {
        var data = Pattern(1024, 99);
        Assert.Equal(0, Write(2, data));
        var (st, back) = Read(2, 1024);
        Assert.Equal(0, st);
        Assert.Equal(data, back);
        Assert.True(Device.IsRunning);
        Assert.Null(Device.FaultReason);
    }

    public bool Logged(string text) => Logs.Lines.Any(l => l.Text.Contains(text, StringComparison.Ordinal));

    public void Dispose()
    {
        Setup.Dispose();
        Fe.Dispose();
        Socket.Dispose();
        Blk.Dispose();
        Storage.Dispose();
        _lf.Dispose();
    }
}
