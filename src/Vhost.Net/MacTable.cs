namespace Vhost.Net;

/// <summary>
/// A MAC-learning table of fixed capacity (DPDK's examples/vhost also keeps a fixed set): a guest that invents
/// source MACs fills it once and is then refused, counted in <see cref="Refused"/>, instead of growing it. A
/// refused MAC is simply not learned, so frames to it are flooded, which is what a switch does for an unknown
/// destination. Open addressing over arrays allocated up front: nothing is allocated per frame. Not thread-safe;
/// one switch thread owns it.
/// </summary>
public sealed class MacTable
{
    /// <summary>The default bound: one process's switch, far more stations than any test bed has.</summary>
    public const int DefaultCapacity = 4096;

    private readonly ulong[] _keys; // MAC + 1, so 0 marks an empty slot
    private readonly int[] _ports;
    private readonly int _mask;

    /// <summary>A table that learns at most <paramref name="capacity"/> addresses (1 to 2^24); its arrays are allocated here, once.</summary>
    public MacTable(int capacity = DefaultCapacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(capacity, 1 << 24);
        Capacity = capacity;
        // at most half full, so a probe ends soon at an empty slot
        int slots = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)capacity * 2);
        _keys = new ulong[slots];
        _ports = new int[slots];
        _mask = slots - 1;
    }

    /// <summary>The most addresses the table learns.</summary>
    public int Capacity { get; }

    /// <summary>The addresses learned so far.</summary>
    public int Count { get; private set; }

    /// <summary>Learnings refused because the table was full (a known MAC moving to another port is never refused).</summary>
    public long Refused { get; private set; }

    /// <summary>Records that <paramref name="mac"/> (48 bits) was seen on <paramref name="port"/>; false when refused.</summary>
    public bool Learn(ulong mac, int port)
    {
        int i = Find(mac);
        if (_keys[i] != 0)
        {
            _ports[i] = port;
            return true;
        }
        if (Count == Capacity)
        {
            Refused++;
            return false;
        }
        _keys[i] = (mac & 0xffff_ffff_ffffUL) + 1;
        _ports[i] = port;
        Count++;
        return true;
    }

    /// <summary>The port <paramref name="mac"/> was last seen on; false when it was never learned.</summary>
    public bool TryGetPort(ulong mac, out int port)
    {
        int i = Find(mac);
        port = _ports[i];
        return _keys[i] != 0;
    }

    // the slot holding mac, or the empty slot where it would go
    private int Find(ulong mac)
    {
        ulong key = (mac & 0xffff_ffff_ffffUL) + 1;
        int i = (int)((key * 0x9E3779B97F4A7C15UL) >> 40) & _mask;
        while (_keys[i] != 0 && _keys[i] != key) i = (i + 1) & _mask;
        return i;
    }
}
