using Vhost.Interop;
using Vhost.Protocol;
using Vhost.Rings;

namespace Vhost.Testing.FrontEnd;

/// <summary>What <see cref="DeviceSetup"/> asks for. The acked sets are these intersected with what the back-end offers.</summary>
internal sealed record DeviceSetupOptions
{
    /// <summary>
    /// Virtio features the test is willing to accept. By default everything except what needs front-end
    /// work this kit does not do at bring-up: dirty logging, the IOMMU, and packed rings unless <see cref="Packed"/>.
    /// </summary>
    public ulong Features { get; init; } =
        ~(VirtioFeature.Bit(VirtioFeature.LogAll) | VirtioFeature.Bit(VirtioFeature.AccessPlatform) | VirtioFeature.Bit(VirtioFeature.RingPacked));

    public ulong ProtocolFeatures { get; init; } = DefaultProtocolFeatures;

    public static ulong DefaultProtocolFeatures { get; } = ProtocolBits(
        ProtocolFeature.Mq, ProtocolFeature.ReplyAck, ProtocolFeature.Rarp, ProtocolFeature.NetMtu, ProtocolFeature.Config,
        ProtocolFeature.ResetDevice, ProtocolFeature.ConfigureMemSlots, ProtocolFeature.Status);

    public int QueueCount { get; init; } = 2;

    public ushort QueueSize { get; init; } = 256;

    /// <summary>Packed rings: VIRTIO_F_RING_PACKED is required of the back-end and acked.</summary>
    public bool Packed { get; init; }

    /// <summary>Guest memory to create when the caller supplies none (one region at <see cref="GuestBase"/>).</summary>
    public ulong MemorySize { get; init; } = 16 << 20;

    /// <summary>Not zero, so that a zeroed descriptor never points at valid guest memory by accident.</summary>
    public ulong GuestBase { get; init; } = 0x10_0000;

    /// <summary>Each ring part's alignment (the spec needs at most 16; a page keeps parts apart).</summary>
    public ulong RingAlign { get; init; } = 4096;

    /// <summary>Set NEED_REPLY on setters when REPLY_ACK is negotiated, and require a zero ack.</summary>
    public bool UseReplyAck { get; init; } = true;

    /// <summary>virtio-user sends SET_OWNER first; QEMU sends it after protocol-feature negotiation.</summary>
    public bool OwnerFirst { get; init; } = true;

    public bool EnableQueues { get; init; } = true;

    /// <summary>SET_VRING_KICK with the no-fd flag: the back-end must poll.</summary>
    public bool PollingKick { get; init; }

    /// <summary>SET_VRING_CALL with the no-fd flag: the test polls the used ring.</summary>
    public bool PollingCall { get; init; }

    /// <summary>SET_VRING_BASE num; null means 0 (split) or 0x8000, wrap counter 1 (packed).</summary>
    public uint? VringBase { get; init; }

    /// <summary>Send SET_STATUS (ACKNOWLEDGE|DRIVER|FEATURES_OK, later DRIVER_OK) when STATUS is negotiated.</summary>
    public bool SendStatus { get; init; }

    /// <summary>What SET_VRING_ADDR carries for a ring at a guest-physical address: null means its front-end
    /// virtual address; under a vIOMMU, the ring's IOVA.</summary>
    public Func<ulong, ulong>? RingAddress { get; init; }

    public static ulong ProtocolBits(params ReadOnlySpan<ProtocolFeature> features)
    {
        ulong v = 0;
        foreach (var f in features) v |= 1UL << (int)f;
        return v;
    }
}

/// <summary>
/// One queue as set up: where its ring parts are (GPA and local window), the UVAs sent in SET_VRING_ADDR,
/// and its eventfds. For packed rings Avail/Used are the driver and device event areas.
/// </summary>
internal sealed record QueueSetup : IDisposable
{
    public required uint Index { get; init; }

    public required ushort Size { get; init; }

    public required bool Packed { get; init; }

    /// <summary>Split: descriptor table. Packed: descriptor ring.</summary>
    public required ulong DescGpa { get; init; }

    /// <summary>Split: available ring. Packed: driver event suppression area.</summary>
    public required ulong AvailGpa { get; init; }

    /// <summary>Split: used ring. Packed: device event suppression area.</summary>
    public required ulong UsedGpa { get; init; }

    public required NativeWindow Desc { get; init; }

    public required NativeWindow Avail { get; init; }

    public required NativeWindow Used { get; init; }

    public ulong DriverEventGpa => AvailGpa;

    public ulong DeviceEventGpa => UsedGpa;

    public NativeWindow DriverEvent => Avail;

    public NativeWindow DeviceEvent => Used;

    /// <summary>The SET_VRING_ADDR payload that was sent (front-end virtual addresses).</summary>
    public required VringAddress Address { get; init; }

    /// <summary>Write here to kick the back-end; null when the back-end was told to poll.</summary>
    public SafeFd? KickFd { get; init; }

    /// <summary>The back-end signals here; null when the call was set to polling.</summary>
    public SafeFd? CallFd { get; init; }

    /// <summary>Signals the kick eventfd.</summary>
    public void Kick()
    {
        if (KickFd is null) throw new InvalidOperationException($"queue {Index} has no kick fd (polling)");
        if (!EventFd.Signal(KickFd)) throw new IOException($"kick of queue {Index} failed");
    }

    /// <summary>Waits for an interrupt from the back-end and clears it; false on timeout.</summary>
    public bool WaitCall(TimeSpan timeout)
    {
        if (CallFd is null) throw new InvalidOperationException($"queue {Index} has no call fd (polling)");
        if (!Poll.WaitReadable(CallFd, (int)Math.Min(timeout.TotalMilliseconds, int.MaxValue))) return false;
        EventFd.Consume(CallFd);
        return true;
    }

    /// <summary>Clears pending interrupts without waiting; returns the eventfd count (0 if none).</summary>
    public ulong ConsumeCalls() => CallFd is null ? 0 : EventFd.Consume(CallFd);

    public void Dispose()
    {
        KickFd?.Dispose();
        CallFd?.Dispose();
    }
}

/// <summary>
/// The bring-up a front-end performs before the guest driver runs: feature negotiation, memory table,
/// rings, enable. <see cref="Run"/> does it all; tests that want to stop or deviate part-way call the
/// steps themselves (<see cref="Negotiate"/>, <see cref="SendMemTable"/>, <see cref="SetUpQueue"/>,
/// <see cref="EnableQueues"/>). Every ack must be zero, else <see cref="InvalidOperationException"/>.
/// </summary>
internal sealed class DeviceSetup : IDisposable
{
    private readonly bool _ownsMemory;
    private readonly List<QueueSetup> _queues = [];

    public DeviceSetup(TestFrontEnd frontEnd, DeviceSetupOptions? options = null, FrontEndMemory? memory = null)
    {
        FrontEnd = frontEnd ?? throw new ArgumentNullException(nameof(frontEnd));
        Options = options ?? new DeviceSetupOptions();
        if (memory is null)
        {
            memory = new FrontEndMemory();
            memory.AddRegion(Options.GuestBase, Options.MemorySize);
            _ownsMemory = true;
        }
        Memory = memory;
    }

    public TestFrontEnd FrontEnd { get; }

    public DeviceSetupOptions Options { get; }

    public FrontEndMemory Memory { get; }

    public ulong OfferedFeatures { get; private set; }

    public ulong AckedFeatures { get; private set; }

    public ulong OfferedProtocolFeatures { get; private set; }

    public ulong AckedProtocolFeatures { get; private set; }

    public bool ProtocolFeaturesNegotiated => VirtioFeature.Has(AckedFeatures, VirtioFeature.ProtocolFeatures);

    /// <summary>GET_QUEUE_NUM's answer when MQ was negotiated.</summary>
    public ulong? ReportedQueueNum { get; private set; }

    /// <summary>GET_MAX_MEM_SLOTS's answer when CONFIGURE_MEM_SLOTS was negotiated.</summary>
    public ulong? ReportedMaxMemSlots { get; private set; }

    public IReadOnlyList<QueueSetup> Queues => _queues;

    public QueueSetup this[int index] => _queues[index];

    /// <summary>The whole standard bring-up.</summary>
    public static DeviceSetup Run(TestFrontEnd frontEnd, DeviceSetupOptions? options = null, FrontEndMemory? memory = null)
    {
        var setup = new DeviceSetup(frontEnd, options, memory);
        try
        {
            setup.Negotiate();
            setup.SendMemTable();
            for (int i = 0; i < setup.Options.QueueCount; i++) setup.SetUpQueue(i);
            if (setup.Options.EnableQueues) setup.EnableQueues();
            return setup;
        }
        catch
        {
            setup.Dispose();
            throw;
        }
    }

    private bool NeedReply => Options.UseReplyAck && FrontEnd.ReplyAckNegotiated;

    /// <summary>SET_OWNER, GET/SET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS.</summary>
    public void Negotiate()
    {
        if (Options.OwnerFirst) FrontEnd.SetOwner();
        OfferedFeatures = FrontEnd.GetFeatures();
        ulong wanted = Options.Features | (Options.Packed ? VirtioFeature.Bit(VirtioFeature.RingPacked) : 0);
        if (Options.Packed && !VirtioFeature.Has(OfferedFeatures, VirtioFeature.RingPacked))
            throw new NotSupportedException($"packed rings requested but the back-end offers 0x{OfferedFeatures:x}");
        ulong acked = OfferedFeatures & wanted;

        if (VirtioFeature.Has(acked, VirtioFeature.ProtocolFeatures))
        {
            OfferedProtocolFeatures = FrontEnd.GetProtocolFeatures();
            AckedProtocolFeatures = OfferedProtocolFeatures & Options.ProtocolFeatures;
            FrontEnd.SetProtocolFeatures(AckedProtocolFeatures);
            if ((AckedProtocolFeatures & (1UL << (int)ProtocolFeature.Mq)) != 0) ReportedQueueNum = FrontEnd.GetQueueNum();
            if ((AckedProtocolFeatures & (1UL << (int)ProtocolFeature.ConfigureMemSlots)) != 0) ReportedMaxMemSlots = FrontEnd.GetMaxMemSlots();
        }
        if (!Options.OwnerFirst) Check(FrontEnd.SetOwner(NeedReply), "SET_OWNER");

        AckedFeatures = acked;
        Check(FrontEnd.SetFeatures(acked, NeedReply), "SET_FEATURES");
        if (Options.SendStatus && HasProtocol(ProtocolFeature.Status))
            Check(FrontEnd.SetStatus(VirtioDeviceStatus.Acknowledge | VirtioDeviceStatus.Driver | VirtioDeviceStatus.FeaturesOk, NeedReply), "SET_STATUS");
    }

    public void SendMemTable() => Check(FrontEnd.SetMemTable(Memory, NeedReply), "SET_MEM_TABLE");

    /// <summary>Allocates queue <paramref name="index"/>'s rings and eventfds and sends SET_VRING_NUM/ADDR/BASE/CALL/KICK.</summary>
    public QueueSetup SetUpQueue(int index)
    {
        var q = AllocateQueue((uint)index);
        _queues.Add(q);
        uint i = q.Index;
        Check(FrontEnd.SetVringNum(i, q.Size, NeedReply), "SET_VRING_NUM");
        Check(FrontEnd.SetVringAddr(q.Address, NeedReply), "SET_VRING_ADDR");
        Check(FrontEnd.SetVringBase(i, Options.VringBase ?? (q.Packed ? 0x8000u : 0u), NeedReply), "SET_VRING_BASE");
        // Call before kick: a back-end may start the ring on SET_VRING_KICK and must have somewhere to signal.
        Check(FrontEnd.SetVringCall(i, q.CallFd, NeedReply), "SET_VRING_CALL");
        Check(FrontEnd.SetVringKick(i, q.KickFd, NeedReply), "SET_VRING_KICK");
        return q;
    }

    /// <summary>SET_VRING_ENABLE 1 for every set-up queue (only meaningful with protocol features), then DRIVER_OK if asked.</summary>
    public void EnableQueues()
    {
        if (ProtocolFeaturesNegotiated)
        {
            foreach (var q in _queues) Check(FrontEnd.SetVringEnable(q.Index, true, NeedReply), "SET_VRING_ENABLE");
        }
        if (Options.SendStatus && HasProtocol(ProtocolFeature.Status))
        {
            Check(FrontEnd.SetStatus(VirtioDeviceStatus.Acknowledge | VirtioDeviceStatus.Driver | VirtioDeviceStatus.FeaturesOk | VirtioDeviceStatus.DriverOk, NeedReply),
                "SET_STATUS");
        }
    }

    /// <summary>GET_VRING_BASE: stops the queue and returns where the back-end stopped.</summary>
    public uint StopQueue(int index) => FrontEnd.GetVringBase(_queues[index].Index);

    /// <summary>Allocates ring memory and eventfds for a queue without telling the back-end anything.</summary>
    public QueueSetup AllocateQueue(uint index)
    {
        ulong n = Options.QueueSize;
        ulong align = Options.RingAlign;
        ulong descLen = 16 * n;
        ulong availLen = Options.Packed ? 4 : 6 + 2 * n;
        ulong usedLen = Options.Packed ? 4 : 6 + 8 * n;
        ulong desc = Memory.Allocate(descLen, align);
        ulong avail = Memory.Allocate(availLen, align);
        ulong used = Memory.Allocate(usedLen, align);
        var at = Options.RingAddress ?? Memory.Uva;
        var address = new VringAddress(index, 0, at(desc), at(used), at(avail), 0);
        SafeFd? kick = Options.PollingKick ? null : EventFd.Create(nonBlocking: true);
        SafeFd? call = null;
        try
        {
            call = Options.PollingCall ? null : EventFd.Create(nonBlocking: true);
            return new QueueSetup
            {
                Index = index,
                Size = Options.QueueSize,
                Packed = Options.Packed,
                DescGpa = desc,
                AvailGpa = avail,
                UsedGpa = used,
                Desc = Memory.Window(desc, descLen),
                Avail = Memory.Window(avail, availLen),
                Used = Memory.Window(used, usedLen),
                Address = address,
                KickFd = kick,
                CallFd = call,
            };
        }
        catch
        {
            kick?.Dispose();
            call?.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        foreach (var q in _queues) q.Dispose();
        _queues.Clear();
        if (_ownsMemory) Memory.Dispose();
    }

    private bool HasProtocol(ProtocolFeature f) => (AckedProtocolFeatures & (1UL << (int)f)) != 0;

    private static void Check(ulong? ack, string what)
    {
        if (ack is ulong a && a != 0) throw new InvalidOperationException($"back-end NACKed {what} with {a}");
    }
}
