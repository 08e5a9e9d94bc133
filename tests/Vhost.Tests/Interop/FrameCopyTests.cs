using Vhost.Interop;

namespace Vhost.Tests.Interop;

public sealed class FrameCopyTests
{
    /// <summary>
    /// Every length up to 600 and some jumbo ones, from and to odd offsets: each width (byte loop, 4- and 8-byte
    /// pairs, 16-byte and 32-byte overlapping pairs, the 32-byte loop and its tail) lands exactly the source's
    /// bytes and moves nothing after them.
    /// </summary>
    [Fact]
    public void CopiesExactlyTheSourceWhateverItsLength()
    {
        var src = new byte[9100];
        for (int i = 0; i < src.Length; i++) src[i] = (byte)(i * 7 + 1);
        int[] lengths = [.. Enumerable.Range(0, 601), 1514, 4095, 4096, 9000, 9017];
        foreach (int len in lengths)
        {
            var dst = new byte[len + 40];
            Array.Fill(dst, (byte)0xee);
            FrameCopy.Copy(src.AsSpan(5, len), dst.AsSpan(3, len + 20));
            Assert.True(dst.AsSpan(3, len).SequenceEqual(src.AsSpan(5, len)), $"length {len}");
            Assert.All(dst[..3], b => Assert.Equal(0xee, b));
            Assert.All(dst[(3 + len)..], b => Assert.Equal(0xee, b));
        }
    }

    [Theory]
    [InlineData(20)]
    [InlineData(64)]
    [InlineData(100)]
    [InlineData(300)]
    public void ShortDestinationThrowsAndWritesNothing(int len)
    {
        var src = new byte[len];
        Array.Fill(src, (byte)1);
        var dst = new byte[len - 1];
        Array.Fill(dst, (byte)0xee);
        Assert.Throws<ArgumentException>(() => FrameCopy.Copy(src, dst));
        Assert.All(dst, b => Assert.Equal(0xee, b));
    }
}
