using Vhost.Interop;

namespace Vhost.Tests.Interop;

public sealed class CacheLinesTests
{
    [Fact]
    public void EvictionIsAvailableHere() =>
        Assert.True(CacheLines.IsSupported, "x86-64 Linux with CLFLUSH expected: the eviction code did not load");

    /// <summary>Evicting lines (some just written) keeps every byte, also for ranges that start and end mid-line.</summary>
    [Fact]
    public void EvictedLinesKeepTheirContents()
    {
        const int Bytes = 8192;
        using var fd = FileDescriptors.CreateMemFd("vhost-evict", Bytes);
        using var map = MemoryMapping.Map(fd, Bytes);
        var window = map.Window;
        var span = window.Span(0, Bytes);
        for (int i = 0; i < Bytes; i++) span[i] = (byte)(i * 7);
        window.Evict(0, Bytes);
        window.Evict(13, 1);
        window.Evict(100, 3000);
        window.Evict(Bytes - 1, 1);
        window.Evict(64, 0);
        for (int i = 0; i < Bytes; i++) Assert.Equal((byte)(i * 7), span[i]);
        var part = window.Slice(100, 28);
        part.Evict(0, 28);
        Assert.Throws<ArgumentOutOfRangeException>(() => part.Evict(1, 28));
        Assert.Throws<ArgumentOutOfRangeException>(() => part.Evict(29, 0));
    }

    /// <summary>The code bytes are what the listings assemble to (GNU as from binutils; test.sh installs it).</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void CodeMatchesTheListing(bool opt) =>
        Assert.Equal(GnuAssembler.Assemble(opt ? CacheLines.ListingOpt : CacheLines.ListingPlain), (opt ? CacheLines.CodeOpt : CacheLines.CodePlain).ToArray());
}
