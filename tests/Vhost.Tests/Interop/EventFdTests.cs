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

    /// <summary>An I/O thread may signal a completion fd just after teardown disposed it: a failed signal, not an exception.</summary>
    [Fact]
    public void SignalAndConsumeOfADisposedFdFailQuietly()
    {
        var fd = EventFd.Create(nonBlocking: true);
        Assert.True(EventFd.Signal(fd));
        fd.Dispose();
        Assert.False(EventFd.Signal(fd));
        Assert.Equal(0UL, EventFd.Consume(fd));
    }

    /// <summary>Only an eventfd is accepted as a kick, call or err fd: a pipe could stall the reactor.</summary>
    [Fact]
    public void OnlyEventFdsAreEventFds()
    {
        using var e = EventFd.Create();
        var (r, w) = FileDescriptors.Pipe();
        using (r)
        using (w)
        {
            Assert.True(FileDescriptors.IsEventFd(e));
            Assert.False(FileDescriptors.IsEventFd(r));
            Assert.True(FileDescriptors.SetNonBlocking(e));
            // a non-blocking eventfd reads nothing instead of waiting
            Assert.Equal(0UL, EventFd.Consume(e));
        }
    }
}
