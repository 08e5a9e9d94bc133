using System.Buffers.Binary;
using Vhost.Interop;
using Vhost.Testing.FrontEnd;

namespace Vhost.Testing.Rings;

/// <summary>One buffer of a chain as the driver describes it.</summary>
internal readonly record struct DriverBuffer(ulong Gpa, uint Length, bool Writable);

/// <summary>A used element as the driver reads it back.</summary>
internal readonly record struct UsedElement(ushort Id, uint Length);

/// <summary>The guest driver's side of a virtqueue, for tests: adds chains, reads used elements, and can
/// write anything at all into the ring for hostile tests.</summary>
internal abstract class DriverRing
{
    protected DriverRing(QueueSetup queue, FrontEndMemory memory)
    {
        Queue = queue;
        Memory = memory;
        Size = queue.Size;
    }

    public QueueSetup Queue { get; }

    public FrontEndMemory Memory { get; }

    public int Size { get; }

    public static DriverRing Create(QueueSetup queue, FrontEndMemory memory) =>
        queue.Packed ? new DriverPackedRing(queue, memory) : new DriverSplitRing(queue, memory);

    /// <summary>Makes a chain available; returns its id (split: head index; packed: buffer id).</summary>
    public abstract ushort Add(params ReadOnlySpan<DriverBuffer> buffers);

    /// <summary>Makes a chain available through an indirect table placed in guest memory.</summary>
    public abstract ushort AddIndirect(params ReadOnlySpan<DriverBuffer> buffers);

    public abstract bool TryGetUsed(out UsedElement used);

    /// <summary>Writes a 16-byte descriptor as raw fields (split: next; packed: id) at a ring slot.</summary>
    public void WriteDescriptor(int slot, ulong addr, uint len, ushort flags, ushort nextOrId)
    {
        var d = Queue.Desc.Span((nuint)(slot * 16), 16);
        BinaryPrimitives.WriteUInt64LittleEndian(d, addr);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], len);
        if (this is DriverPackedRing)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(d[12..], nextOrId);
            BinaryPrimitives.WriteUInt16LittleEndian(d[14..], flags);
        }
        else
        {
            BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
            BinaryPrimitives.WriteUInt16LittleEndian(d[14..], nextOrId);
        }
    }

    /// <summary>Waits (polling) until a used element arrives.</summary>
    public UsedElement WaitUsed(TimeSpan timeout)
    {
        var end = DateTime.UtcNow + timeout;
        while (true)
        {
            if (TryGetUsed(out var u)) return u;
            if (DateTime.UtcNow > end) throw new TimeoutException($"no used element on queue {Queue.Index}");
            Thread.Sleep(1);
        }
    }

    protected static void WriteTableEntry(Span<byte> d, DriverBuffer b, ushort flags, ushort nextOrId, bool packed)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(d, b.Gpa);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], b.Length);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], packed ? nextOrId : flags);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], packed ? flags : nextOrId);
    }

    public const ushort Next = 1;
    public const ushort Write = 2;
    public const ushort Indirect = 4;
}

/// <summary>Split ring driver: descriptors handed out from a free list, heads published in the avail ring.</summary>
internal sealed class DriverSplitRing : DriverRing
{
    private readonly Stack<ushort> _free = new();
    private readonly Dictionary<ushort, ushort[]> _inUse = [];
    private ushort _availIdx;
    private ushort _lastUsed;

    public DriverSplitRing(QueueSetup queue, FrontEndMemory memory) : base(queue, memory)
    {
        for (int i = Size - 1; i >= 0; i--) _free.Push((ushort)i);
        _availIdx = (ushort)(queue.Avail.Ref<ushort>(2));
        _lastUsed = queue.Used.Ref<ushort>(2);
    }

    public ushort AvailIndex => _availIdx;

    public override ushort Add(params ReadOnlySpan<DriverBuffer> buffers)
    {
        if (_free.Count < buffers.Length) throw new InvalidOperationException("ring full");
        var ids = new ushort[buffers.Length];
        for (int i = 0; i < ids.Length; i++) ids[i] = _free.Pop();
        for (int i = 0; i < ids.Length; i++)
        {
            bool last = i == ids.Length - 1;
            var b = buffers[i];
            WriteDescriptor(ids[i], b.Gpa, b.Length, (ushort)((last ? 0 : Next) | (b.Writable ? Write : 0)), last ? (ushort)0 : ids[i + 1]);
        }
        _inUse[ids[0]] = ids;
        Publish(ids[0]);
        return ids[0];
    }

    public override ushort AddIndirect(params ReadOnlySpan<DriverBuffer> buffers)
    {
        ulong table = Memory.Allocate((ulong)(16 * buffers.Length), 16);
        var t = Memory.Span(table, 16 * buffers.Length);
        for (int i = 0; i < buffers.Length; i++)
        {
            bool last = i == buffers.Length - 1;
            WriteTableEntry(t.Slice(16 * i, 16), buffers[i], (ushort)((last ? 0 : Next) | (buffers[i].Writable ? Write : 0)), (ushort)(last ? 0 : i + 1), packed: false);
        }
        ushort head = _free.Pop();
        WriteDescriptor(head, table, (uint)(16 * buffers.Length), Indirect, 0);
        _inUse[head] = [head];
        Publish(head);
        return head;
    }

    /// <summary>Puts a head into the avail ring and publishes the new index (no descriptor bookkeeping).</summary>
    public void Publish(ushort head)
    {
        Queue.Avail.Ref<ushort>((nuint)(4 + 2 * (_availIdx % Size))) = head;
        _availIdx++;
        Volatile.Write(ref Queue.Avail.Ref<ushort>(2), _availIdx);
    }

    /// <summary>Writes the avail index as given (hostile tests).</summary>
    public void SetAvailIndex(ushort value)
    {
        _availIdx = value;
        Volatile.Write(ref Queue.Avail.Ref<ushort>(2), value);
    }

    public void SetAvailFlags(ushort flags) => Volatile.Write(ref Queue.Avail.Ref<ushort>(0), flags);

    /// <summary>used_event (EVENT_IDX): interrupt me when the used index passes this.</summary>
    public void SetUsedEvent(ushort value) => Volatile.Write(ref Queue.Avail.Ref<ushort>((nuint)(4 + 2 * Size)), value);

    public ushort UsedFlags => Volatile.Read(ref Queue.Used.Ref<ushort>(0));

    public ushort AvailEvent => Volatile.Read(ref Queue.Used.Ref<ushort>((nuint)(4 + 8 * Size)));

    public ushort UsedIndex => Volatile.Read(ref Queue.Used.Ref<ushort>(2));

    public override bool TryGetUsed(out UsedElement used)
    {
        ushort idx = Volatile.Read(ref Queue.Used.Ref<ushort>(2));
        if (idx == _lastUsed)
        {
            used = default;
            return false;
        }
        var e = Queue.Used.Span((nuint)(4 + 8 * (_lastUsed % Size)), 8);
        used = new UsedElement((ushort)BinaryPrimitives.ReadUInt32LittleEndian(e), BinaryPrimitives.ReadUInt32LittleEndian(e[4..]));
        _lastUsed++;
        if (_inUse.Remove(used.Id, out var ids))
        {
            foreach (var i in ids) _free.Push(i);
        }
        return true;
    }
}

/// <summary>Packed ring driver: chains in consecutive slots, availability in the flags' wrap bits.</summary>
internal sealed class DriverPackedRing : DriverRing
{
    private const ushort AvailBit = 1 << 7;
    private const ushort UsedBit = 1 << 15;
    private int _next;
    private bool _wrap = true;
    private int _usedPos;
    private bool _usedWrap = true;
    private ushort _nextId;
    private readonly Dictionary<ushort, int> _slots = [];
    private int _free;
    private readonly Queue<ushort> _order = new();
    private readonly Queue<UsedElement> _batch = new();

    /// <summary>
    /// VIRTIO_F_IN_ORDER was negotiated: a used descriptor may return every buffer made available before it
    /// too (one descriptor for a batch); those come back from <see cref="TryGetUsed"/> with length 0.
    /// Set before adding buffers.
    /// </summary>
    public bool InOrder { get; set; }

    public DriverPackedRing(QueueSetup queue, FrontEndMemory memory) : base(queue, memory)
    {
        _free = Size;
    }

    private ushort AvailFlags(bool wrap) => wrap ? AvailBit : UsedBit;

    /// <summary>The slot the next chain's first descriptor goes into (racing tests aim at its fields).</summary>
    public int NextSlot => _next;

    public override ushort Add(params ReadOnlySpan<DriverBuffer> buffers)
    {
        if (_free < buffers.Length) throw new InvalidOperationException("ring full");
        ushort id = NextId();
        int head = _next;
        ushort headFlags = 0;
        for (int i = 0; i < buffers.Length; i++)
        {
            bool last = i == buffers.Length - 1;
            var b = buffers[i];
            ushort flags = (ushort)(AvailFlags(_wrap) | (last ? 0 : Next) | (b.Writable ? Write : 0));
            if (i == 0)
            {
                headFlags = flags;
                flags = 0; // invisible until the whole chain is written
                WriteDescriptor(_next, b.Gpa, b.Length, (ushort)(AvailFlags(!_wrap)), id);
            }
            else
            {
                WriteDescriptor(_next, b.Gpa, b.Length, flags, id);
            }
            Advance();
        }
        Volatile.Write(ref Queue.Desc.Ref<ushort>((nuint)(head * 16 + 14)), headFlags);
        if (InOrder) _order.Enqueue(id);
        _slots[id] = buffers.Length;
        _free -= buffers.Length;
        return id;
    }

    public override ushort AddIndirect(params ReadOnlySpan<DriverBuffer> buffers)
    {
        ulong table = Memory.Allocate((ulong)(16 * buffers.Length), 16);
        var t = Memory.Span(table, 16 * buffers.Length);
        for (int i = 0; i < buffers.Length; i++)
            WriteTableEntry(t.Slice(16 * i, 16), buffers[i], buffers[i].Writable ? Write : (ushort)0, 0, packed: true);
        ushort id = NextId();
        int head = _next;
        WriteDescriptor(head, table, (uint)(16 * buffers.Length), AvailFlags(!_wrap), id);
        ushort flags = (ushort)(AvailFlags(_wrap) | Indirect);
        Advance();
        Volatile.Write(ref Queue.Desc.Ref<ushort>((nuint)(head * 16 + 14)), flags);
        if (InOrder) _order.Enqueue(id);
        _slots[id] = 1;
        _free -= 1;
        return id;
    }

    /// <summary>Makes the slot at the driver's position available with raw fields (hostile tests).</summary>
    public void AddRaw(ulong addr, uint len, ushort extraFlags, ushort id)
    {
        WriteDescriptor(_next, addr, len, (ushort)(AvailFlags(_wrap) | extraFlags), id);
        Advance();
        _free--;
    }

    private ushort NextId()
    {
        while (_slots.ContainsKey(_nextId)) _nextId = (ushort)((_nextId + 1) % Size);
        ushort id = _nextId;
        _nextId = (ushort)((_nextId + 1) % Size);
        return id;
    }

    private void Advance()
    {
        if (++_next == Size)
        {
            _next = 0;
            _wrap = !_wrap;
        }
    }

    public override bool TryGetUsed(out UsedElement used)
    {
        if (_batch.TryDequeue(out used)) return true;
        var d = Queue.Desc.Span((nuint)(_usedPos * 16), 16);
        ushort flags = Volatile.Read(ref Queue.Desc.Ref<ushort>((nuint)(_usedPos * 16 + 14)));
        bool avail = (flags & AvailBit) != 0, usedBit = (flags & UsedBit) != 0;
        if (avail != _usedWrap || usedBit != _usedWrap)
        {
            used = default;
            return false;
        }
        used = new UsedElement(BinaryPrimitives.ReadUInt16LittleEndian(d[12..]), BinaryPrimitives.ReadUInt32LittleEndian(d[8..]));
        if (InOrder && _order.Contains(used.Id))
        {
            // everything made available up to this id is used
            while (_order.TryDequeue(out var earlier))
            {
                Release(earlier);
                _batch.Enqueue(earlier == used.Id ? used : new UsedElement(earlier, 0));
                if (earlier == used.Id) break;
            }
            used = _batch.Dequeue();
            return true;
        }
        Release(used.Id);
        return true;
    }

    private void Release(ushort id)
    {
        int slots = _slots.Remove(id, out var s) ? s : 1;
        _free += slots;
        _usedPos += slots;
        if (_usedPos >= Size)
        {
            _usedPos -= Size;
            _usedWrap = !_usedWrap;
        }
    }

    /// <summary>Driver event suppression (packed): flags 0 enable, 1 disable, 2 desc with off_wrap.</summary>
    public void SetDriverEvent(ushort flags, ushort offWrap = 0)
    {
        Volatile.Write(ref Queue.DriverEvent.Ref<ushort>(0), offWrap);
        Volatile.Write(ref Queue.DriverEvent.Ref<ushort>(2), flags);
    }

    public ushort DeviceEventFlags => Volatile.Read(ref Queue.DeviceEvent.Ref<ushort>(2));
}
