using Vhost.Interop;

namespace Vhost.Tests.Interop;

public sealed class EventFdTests
{
    /// <summary>A front-end's kick fd may be blocking: looking at it must not wait, and a signal is taken once.</summary>
    [Fact]
    public async Task TryConsumeNeverBlocksAndClearsTheCounter()
    {
        using var fd = EventFd.Create(nonBlocking: false);
        var look = Task.Run(() => EventFd.TryConsume(fd));
        Assert.Same(look, await Task.WhenAny(look, Task.Delay(TimeSpan.FromSeconds(5))));
        Assert.Equal(0ul, await look);
        Assert.True(EventFd.Signal(fd));
        Assert.True(EventFd.Signal(fd));
        Assert.Equal(2ul, EventFd.TryConsume(fd));
        Assert.Equal(0ul, EventFd.TryConsume(fd));
    }
}
