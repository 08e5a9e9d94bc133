using Vhost.Device;
using Vhost.Rings;
using Vhost.Testing.BackEnd;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;

namespace Vhost.Tests.Hostile;

/// <summary>
/// Hostile tests count the process's fds and mappings, so nothing else may run beside them: one
/// collection, never parallel with any other test.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class HostileCollection
{
    public const string Name = "Hostile";
}

/// <summary>
/// A back-end with one well-behaved device already running. A hostile test opens a second connection,
/// misbehaves, and then checks the four things every case must show: the refusal, one clear error line,
/// fds and mappings back to the baseline, and the well-behaved device still moving chains.
/// </summary>
internal sealed class Scene : IDisposable
{
    public static readonly TimeSpan T = TimeSpan.FromSeconds(5);

    private readonly TestFrontEnd _goodFe;
    private readonly DeviceSetup _goodSetup;
    private readonly DriverRing _goodRing;

    public Scene(int maxQueues = 2, ulong? extraProtocolFeatures = null)
    {
        Be = new TestBackEnd(maxQueues, extraProtocolFeatures: extraProtocolFeatures);
        _goodFe = Be.Connect();
        _goodSetup = DeviceSetup.Run(_goodFe, new DeviceSetupOptions { QueueSize = 64 });
        Be.Ops.WaitFor("new");
        Good = Be.Ops.LastNew!;
        _goodRing = DriverRing.Create(_goodSetup[0], _goodSetup.Memory);
        AssertGoodDeviceWorks();
        FdBaseline = FdCount();
        _fdTargets = FdTargets();
        MapBaseline = MapCount();
    }

    public TestBackEnd Be { get; }

    public VhostDevice Good { get; }

    public int FdBaseline { get; }

    public int MapBaseline { get; }

    private readonly List<string> _fdTargets;

    /// <summary>What each fd is (for the failure message: which kind leaked).</summary>
    public static List<string> FdTargets()
    {
        var l = new List<string>();
        foreach (var f in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            try { l.Add(Path.GetFileName(f) + "->" + new FileInfo(f).LinkTarget); } catch (IOException) { }
        }
        return l;
    }

    /// <summary>
    /// Fds of the kinds a front-end hands us or makes us open (sockets, eventfds, memfds, pipes); the runtime
    /// opening assembly files lazily would otherwise show up as noise.
    /// </summary>
    public static int FdCount() => FdTargets().Count(IsFrontEndKind);

    private static bool IsFrontEndKind(string t) =>
        t.Contains("->socket:", StringComparison.Ordinal) || t.Contains("->anon_inode:", StringComparison.Ordinal)
        || t.Contains("->/memfd:", StringComparison.Ordinal) || t.Contains("->pipe:", StringComparison.Ordinal);

    /// <summary>Shared-memory mappings of memfds (both the test front-end's and the back-end's).</summary>
    public static int MapCount() => File.ReadLines("/proc/self/maps").Count(l => l.Contains("memfd:vhost", StringComparison.Ordinal));

    public TestFrontEnd Connect() => Be.Connect();

    /// <summary>The device of the newest connection other than the good one, once it exists.</summary>
    public VhostDevice WaitOtherDevice(IReadOnlyCollection<VhostDevice>? except = null)
    {
        var end = DateTime.UtcNow + T;
        while (DateTime.UtcNow < end)
        {
            var d = Be.Socket.Devices.FirstOrDefault(x => x != Good && (except == null || !except.Contains(x)));
            if (d != null) return d;
            Thread.Sleep(5);
        }
        throw new TimeoutException("no second device");
    }

    public void WaitOtherDeviceGone()
    {
        var end = DateTime.UtcNow + T;
        while (Be.Socket.Devices.Count > 1 && DateTime.UtcNow < end) Thread.Sleep(5);
    }

    /// <summary>A hostile connection brought up completely (the chain cases misbehave in the rings only).</summary>
    public (TestFrontEnd Fe, DeviceSetup Setup, VhostDevice Dev, DriverRing Ring) BringUp(bool packed, ushort queueSize = 64, ulong memorySize = 16 << 20)
    {
        var before = Be.Socket.Devices;
        var fe = Be.Connect();
        var setup = DeviceSetup.Run(fe, new DeviceSetupOptions { QueueSize = queueSize, Packed = packed, MemorySize = memorySize });
        var dev = WaitOtherDevice(before);
        var end = DateTime.UtcNow + T;
        while (!dev.IsRunning && DateTime.UtcNow < end) Thread.Sleep(5);
        Assert.True(dev.IsRunning);
        return (fe, setup, dev, DriverRing.Create(setup[0], setup.Memory));
    }

    public static void AssertClosed(TestFrontEnd fe) => Assert.True(fe.IsClosedByPeer(T), "the back-end did not close the hostile connection");

    public static void AssertNack(ulong? ack)
    {
        Assert.NotNull(ack);
        Assert.NotEqual(0UL, ack.Value);
    }

    /// <summary>Exactly one error line, and it names the problem.</summary>
    public void AssertOneError(string phrase)
    {
        Assert.True(Be.Logs.WaitForError(phrase), $"no error line containing '{phrase}'; errors: {string.Join(" | ", Be.Logs.Errors)}");
        Thread.Sleep(100); // a second line for the same refusal would come right after the first
        var errors = Be.Logs.Errors.ToList();
        Assert.True(errors.Count == 1, $"expected one error line, got {errors.Count}: {string.Join(" | ", errors)}");
    }

    /// <summary>After the hostile front-end is gone: its device released, fds and mappings back to the baseline.</summary>
    public void AssertReleased()
    {
        var end = DateTime.UtcNow + T;
        while (Be.Socket.Devices.Count > 1 && DateTime.UtcNow < end) Thread.Sleep(5);
        Assert.Single(Be.Socket.Devices);
        int fds = 0, maps = 0;
        while (DateTime.UtcNow < end)
        {
            fds = FdCount();
            maps = MapCount();
            if (fds <= FdBaseline && maps <= MapBaseline) break;
            Thread.Sleep(20);
        }
        Assert.True(fds <= FdBaseline, $"fds: {fds} after, {FdBaseline} before; new: {string.Join(", ", FdTargets().Where(IsFrontEndKind).Except(_fdTargets))}");
        Assert.True(maps <= MapBaseline, $"memfd mappings: {maps} after, {MapBaseline} before");
    }

    /// <summary>The well-behaved device moves one chain through queue 0 and is still running.</summary>
    public void AssertGoodDeviceWorks()
    {
        Assert.True(Good.IsRunning, "the well-behaved device stopped");
        ulong buf = _goodSetup.Memory.Allocate(64);
        ushort id = _goodRing.Add(new DriverBuffer(buf, 64, true));
        var q = Good.Queue(0);
        var chains = new DescriptorChain[2];
        var segs = new BufferSegment[4];
        using (q.AccessLock.EnterScope())
        {
            Assert.Equal(1, q.Pop(chains, segs));
            q.PushUsed(chains[0], 64);
            q.FlushUsed();
        }
        Assert.Equal(new UsedElement(id, 64), _goodRing.WaitUsed(T));
    }

    /// <summary>Pops from a hostile device's queue 0 and publishes whatever was staged.</summary>
    public static int PopAndFlush(VhostDevice dev, BufferSegment[]? segs = null)
    {
        var q = dev.Queue(0);
        using (q.AccessLock.EnterScope())
        {
            int n = q.Pop(new DescriptorChain[8], segs ?? new BufferSegment[256]);
            q.FlushUsed();
            return n;
        }
    }

    public void Dispose()
    {
        _goodSetup.Dispose();
        _goodFe.Dispose();
        Be.Dispose();
    }
}
