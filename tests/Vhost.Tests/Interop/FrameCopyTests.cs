using Vhost.Interop;

namespace Vhost.Tests.Interop;

public sealed class FrameCopyTests
{
    /// <summary>Every length up to 200 (the vector paths cover 32-128, overlapping at both ends): exactly the source's bytes land, nothing after them moves.</summary>
    [Fact]
    public void CopiesExactlyTheSourceWhateverItsLength()
    {
        var src = new byte[200];
        for (int i = 0; i < src.Length; i++) src[i] = (byte)(i * 7 + 1);
        for (int len = 0; len <= 200; len++)
        {
            var dst = new byte[230];
            Array.Fill(dst, (byte)0xee);
            FrameCopy.Copy(src.AsSpan(0, len), dst.AsSpan(3, len + 20));
            Assert.True(dst.AsSpan(3, len).SequenceEqual(src.AsSpan(0, len)), $"length {len}");
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
