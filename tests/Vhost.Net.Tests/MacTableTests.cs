using Vhost.Net;

namespace Vhost.Net.Tests;

public sealed class MacTableTests
{
    [Fact]
    public void AGuestInventingMoreMacsThanTheBoundFillsTheTableOnceAndIsCounted()
    {
        var table = new MacTable(4096);
        for (ulong mac = 0; mac < 10_000; mac++) table.Learn(0x02_00_00_00_00_00UL | mac, 1);
        Assert.Equal(4096, table.Count);
        Assert.Equal(10_000 - 4096, table.Refused);
        // what was learned first stays and still moves between ports; what was refused is unknown (flooded)
        Assert.True(table.Learn(0x02_00_00_00_00_00UL, 2));
        Assert.True(table.TryGetPort(0x02_00_00_00_00_00UL, out int port));
        Assert.Equal(2, port);
        Assert.False(table.TryGetPort(0x02_00_00_00_00_00UL | 9_999, out _));
        Assert.Equal(10_000 - 4096, table.Refused);
    }

    [Fact]
    public void LearningAllocatesNothing()
    {
        var table = new MacTable(64);
        table.Learn(1, 0);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (ulong mac = 0; mac < 1000; mac++)
        {
            table.Learn(mac, (int)(mac & 3));
            table.TryGetPort(mac ^ 5, out _);
        }
        Assert.Equal(before, GC.GetAllocatedBytesForCurrentThread());
        Assert.Equal(64, table.Count);
    }
}
