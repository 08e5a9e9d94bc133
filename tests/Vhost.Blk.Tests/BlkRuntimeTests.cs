using Vhost.Interop;
using Vhost.Memory;
using Vhost.Protocol;
using Vhost.Testing.Rings;

namespace Vhost.Blk.Tests;

/// <summary>
/// Control-plane changes under a running blk device with requests in flight on the I/O threads: the core owns
/// what the data path holds, so nothing a front-end changes meanwhile crashes us, runs a request twice or loses one.
/// </summary>
public sealed class BlkRuntimeTests
{
    /// <summary>A slow RAM disk whose writes wait at a gate the test opens, and which counts every call.</summary>
    internal sealed class GatedDisk(long capacity) : IBlockStorage
    {
        private readonly MemoryDisk _disk = new(capacity, "gated");
        private readonly ManualResetEventSlim _gate = new(true);
        private readonly SemaphoreSlim _entered = new(0);
        private int _writes;

        public int Writes => Volatile.Read(ref _writes);
        public MemoryDisk Disk => _disk;
        public long Capacity => _disk.Capacity;
        public bool IsReadOnly => false;
        public bool IsSlow => true;
        public string Serial => "gated";

        public void Close() => _gate.Reset();

        public void Open() => _gate.Set();

        /// <summary>Waits until <paramref name="count"/> writes are inside the storage.</summary>
        public void WaitEntered(int count)
        {
            for (int i = 0; i < count; i++) Assert.True(_entered.Wait(BlkHarness.T), "the writes never reached the storage");
        }

        public int Read(long offset, NativeWindow destination) => _disk.Read(offset, destination);

        public int Write(long offset, NativeWindow source)
        {
            Interlocked.Increment(ref _writes);
            _entered.Release();
            _gate.Wait();
            return _disk.Write(offset, source);
        }

        public int Flush() => 0;
        public int Discard(long offset, long length) => _disk.Discard(offset, length);
        public int WriteZeroes(long offset, long length, bool mayUnmap) => _disk.WriteZeroes(offset, length, mayUnmap);

        public void Dispose()
        {
            _gate.Set();
            _disk.Dispose();
        }
    }

    private static ushort AddWrite(BlkHarness h, ulong sector, ReadOnlySpan<byte> data, ulong? dataGpa = null)
    {
        ulong hdr = h.Header(BlkRequestType.Out, sector), d = dataGpa ?? h.Alloc(data.Length), s = h.Alloc(1);
        data.CopyTo(h.Span(d, data.Length));
        h.Span(s, 1)[0] = 0xff;
        return h.Rings[0].Add(new DriverBuffer(hdr, 16, false), new DriverBuffer(d, (uint)data.Length, false), new DriverBuffer(s, 1, true));
    }

    [Theory]
    [InlineData(false, "add")]
    [InlineData(true, "add")]
    [InlineData(false, "addr")]
    [InlineData(true, "addr")]
    public void MemoryOrRingAddressChangeWithRequestsInFlightRunsEachOnce(bool packed, string change)
    {
        var disk = new GatedDisk(4 << 20);
        using var h = new BlkHarness(packed: packed, storage: disk);
        disk.Close();
        const int n = 6;
        var ids = new HashSet<ushort>();
        for (int i = 0; i < n; i++) ids.Add(AddWrite(h, (ulong)i * 8, BlkHarness.Pattern(512, i)));
        h.Setup[0].Kick();
        disk.WaitEntered(2);
        // the front-end changes memory or the ring's addresses (as QEMU does when logging starts) while the writes wait
        if (change == "add")
        {
            var extra = h.Memory.AddRegion(0x4000_0000, 1 << 20);
            Assert.Equal(0UL, h.Fe.AddMemReg(extra, needReply: true));
        }
        else
        {
            Assert.Equal(0UL, h.Fe.SetVringAddr(h.Setup[0].Address, needReply: true));
        }
        disk.Open();
        var seen = new List<ushort>();
        for (int i = 0; i < n; i++) seen.Add(h.Rings[0].WaitUsed(BlkHarness.T).Id);
        Assert.Equal(ids.Order(), seen.Order());
        // one more request: if the ring had gone back to the used index, the six would run again first
        Assert.Equal(0, h.Write(100, BlkHarness.Pattern(512, 77)));
        Assert.Equal(n + 1, disk.Writes);
        for (int i = 0; i < n; i++) Assert.Equal(BlkHarness.Pattern(512, i), disk.Disk.Content.Span((nuint)(i * 8 * 512), 512).ToArray());
        h.AssertStillServes();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void RegionRemovedUnderAWriteInFlightStaysMappedUntilItCompletes(bool packed)
    {
        var disk = new GatedDisk(4 << 20);
        using var h = new BlkHarness(packed: packed, storage: disk);
        var extra = h.Memory.AddRegion(0x4000_0000, 1 << 20);
        Assert.Equal(0UL, h.Fe.AddMemReg(extra, needReply: true));
        var data = BlkHarness.Pattern(4096, 5);
        disk.Close();
        AddWrite(h, 16, data, dataGpa: extra.GuestPhysAddr);
        h.Setup[0].Kick();
        disk.WaitEntered(1);
        // the data buffer's region goes while the storage still has to read it
        Assert.Equal(0UL, h.Fe.RemMemReg(extra.Info, needReply: true));
        var region = h.Device.Memory.Regions.Count;
        Assert.Equal(1, region);
        disk.Open();
        var u = h.Rings[0].WaitUsed(BlkHarness.T);
        Assert.Equal(1u, u.Length);
        Assert.Equal(data, disk.Disk.Content.Span(16 * 512, 4096).ToArray());
        h.AssertStillServes();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void KickFdReplacedWhileTheDeviceRunsKeepsServing(bool packed)
    {
        using var h = new BlkHarness(packed: packed);
        var errors = new List<Exception>();
        using var stop = new CancellationTokenSource();
        var writer = new Thread(() =>
        {
            try
            {
                for (int i = 0; i < 300 && !stop.IsCancellationRequested; i++) Assert.Equal(0, h.Write((ulong)(i % 64) * 8, BlkHarness.Pattern(512, i)));
            }
            catch (Exception e)
            {
                lock (errors) errors.Add(e);
            }
        });
        writer.Start();
        // each SET_VRING_KICK closes the back-end's copy of the previous kick fd while the device waits on it
        for (int i = 0; i < 200 && writer.IsAlive; i++)
        {
            using var dup = FileDescriptors.Duplicate(h.Setup[0].KickFd!);
            Assert.Equal(0UL, h.Fe.SetVringKick(0, dup, needReply: true));
        }
        stop.Cancel();
        writer.Join();
        Assert.Empty(errors);
        h.AssertStillServes();
    }

    [Fact]
    public void CallFdAndBackendChannelReplacedWhileTheApplicationNotifies()
    {
        using var h = new BlkHarness(extraProtocolFeatures: 1UL << (int)ProtocolFeature.BackendReq);
        var errors = new List<Exception>();
        using var stop = new CancellationTokenSource();
        var device = h.Device;
        var app = new Thread(() =>
        {
            try
            {
                while (!stop.IsCancellationRequested)
                {
                    device.NotifyGuest(0);
                    device.SendConfigChange();
                }
            }
            catch (Exception e)
            {
                lock (errors) errors.Add(e);
            }
        });
        app.Start();
        var channels = new List<UnixSocket>();
        for (int i = 0; i < 200; i++)
        {
            using var call = EventFd.Create(nonBlocking: true);
            Assert.Equal(0UL, h.Fe.SetVringCall(0, call, needReply: true));
            channels.Add(h.Fe.OpenBackendChannel(needReply: true));
        }
        stop.Cancel();
        app.Join();
        foreach (var c in channels) c.Dispose();
        Assert.Empty(errors);
        Assert.Null(device.FaultReason);
    }

    [Fact]
    public void ABigRingCostsNoSlotsUntilRequestsAreInFlight()
    {
        var disk = new GatedDisk(4 << 20);
        long before = GC.GetTotalAllocatedBytes(precise: true);
        using var h = new BlkHarness(storage: disk, queueSize: 32768);
        long setup = GC.GetTotalAllocatedBytes(precise: true) - before;
        // a slot per ring entry would be 6 KiB each, 200 MB for this ring
        Assert.True(setup < 32 << 20, $"bringing up a 32768-entry ring allocated {setup >> 20} MiB");
        h.AssertStillServes();
    }

    /// <summary>A storage that throws on reads (a bug in an application's IBlockStorage).</summary>
    private sealed class ThrowingDisk(bool slow) : IBlockStorage
    {
        private readonly MemoryDisk _disk = new(1 << 20, "throws");
        public long Capacity => _disk.Capacity;
        public bool IsReadOnly => false;
        public bool IsSlow => slow;
        public string Serial => "throws";
        public int Read(long offset, NativeWindow destination) => throw new InvalidOperationException("storage bug");
        public int Write(long offset, NativeWindow source) => _disk.Write(offset, source);
        public int Flush() => 0;
        public int Discard(long offset, long length) => 0;
        public int WriteZeroes(long offset, long length, bool mayUnmap) => 0;
        public void Dispose() => _disk.Dispose();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AStorageThatThrowsFaultsItsDeviceOnly(bool slow)
    {
        using var other = new BlkHarness();
        using (var h = new BlkHarness(storage: new ThrowingDisk(slow)))
        {
            ulong hdr = h.Header(BlkRequestType.In, 0), d = h.Alloc(512), s = h.Alloc(1);
            h.Rings[0].Add(new DriverBuffer(hdr, 16, false), new DriverBuffer(d, 512, true), new DriverBuffer(s, 1, true));
            h.Setup[0].Kick();
            Assert.True(h.Fe.IsClosedByPeer(BlkHarness.T), "the device whose storage threw stayed connected");
            Assert.True(h.Logs.WaitForError("storage bug"));
        }
        other.AssertStillServes();
    }
}
