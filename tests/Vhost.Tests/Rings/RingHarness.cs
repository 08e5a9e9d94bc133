using Microsoft.Extensions.Logging.Abstractions;
using Vhost.Interop;
using Vhost.Memory;
using Vhost.Protocol;
using Vhost.Rings;
using Vhost.Testing.FrontEnd;
using Vhost.Testing.Rings;

namespace Vhost.Tests.Rings;

/// <summary>
/// A virtqueue on real shared memory without a connection: the test plays the driver through
/// <see cref="DriverRing"/> on the front-end's mapping and calls the back-end queue directly, so ring
/// logic is tested alone and allocation can be measured on one thread.
/// </summary>
internal sealed class RingHarness : IDisposable, IGuestNotifier
{
    public const ulong Base = 0x10_0000;
    private readonly GuestMemoryRegion _region;

    public RingHarness(bool packed, ushort size = 64, bool eventIdx = false, bool indirect = true, uint? vringBase = null, bool inOrder = false)
    {
        Memory = new FrontEndMemory();
        var fr = Memory.AddRegion(Base, 4 << 20);
        _region = GuestMemoryRegion.TryMap(fr.Info, FileDescriptors.Duplicate(fr.Fd), out var error) ?? throw new InvalidOperationException(error);
        Guest = GuestMemory.TryCreate([_region], out _)!;

        ulong descLen = 16u * size, availLen = packed ? 4 : 6 + 2u * size, usedLen = packed ? 4 : 6 + 8u * size;
        ulong desc = Memory.Allocate(descLen, 4096), avail = Memory.Allocate(availLen, 4096), used = Memory.Allocate(usedLen, 4096);
        Setup = new QueueSetup
        {
            Index = 0,
            Size = size,
            Packed = packed,
            DescGpa = desc,
            AvailGpa = avail,
            UsedGpa = used,
            Desc = Memory.Window(desc, descLen),
            Avail = Memory.Window(avail, availLen),
            Used = Memory.Window(used, usedLen),
            Address = new VringAddress(0, 0, Memory.Uva(desc), Memory.Uva(used), Memory.Uva(avail), 0),
        };
        Queue = new Virtqueue(0, NullLogger.Instance, this);
        Queue.SetFeatures((packed ? VirtioFeature.Bit(VirtioFeature.RingPacked) : 0)
            | (eventIdx ? VirtioFeature.Bit(VirtioFeature.RingEventIdx) : 0)
            | (indirect ? VirtioFeature.Bit(VirtioFeature.RingIndirectDesc) : 0)
            | (inOrder ? VirtioFeature.Bit(VirtioFeature.InOrder) : 0));
        Assert.Null(Queue.SetSize(size));
        Queue.SetAddress(Setup.Address);
        Assert.Null(Queue.SetBase(vringBase ?? (packed ? 0x8000u : 0u)));
        Queue.Enabled = true;
        Assert.Null(Queue.Start(Guest));
        Driver = DriverRing.Create(Setup, Memory);
        if (inOrder && packed) Packed.InOrder = true;
    }

    public FrontEndMemory Memory { get; }

    public GuestMemory Guest { get; }

    public QueueSetup Setup { get; }

    public Virtqueue Queue { get; }

    public DriverRing Driver { get; }

    public DriverSplitRing Split => (DriverSplitRing)Driver;

    public DriverPackedRing Packed => (DriverPackedRing)Driver;

    /// <summary>Interrupts the queue raised (what the device would write to the call eventfd).</summary>
    public int Interrupts;

    public string? Fault;

    public DescriptorChain[] Chains { get; } = new DescriptorChain[16];

    public BufferSegment[] Segments { get; } = new BufferSegment[64];

    public int Pop() => Queue.Pop(Chains, Segments);

    /// <summary>Pops exactly one chain and completes it with <paramref name="written"/> bytes.</summary>
    public DescriptorChain PopOneAndComplete(uint written = 0)
    {
        Assert.Equal(1, Pop());
        var c = Chains[0];
        Queue.PushUsed(c, written);
        Queue.FlushUsed();
        return c;
    }

    void IGuestNotifier.NotifyGuest(Virtqueue queue) => Interrupts++;

    void IGuestNotifier.QueueFaulted(Virtqueue queue, string reason) => Fault = reason;

    public void Dispose()
    {
        Queue.Stop();
        _region.Dispose();
        Memory.Dispose();
    }
}
