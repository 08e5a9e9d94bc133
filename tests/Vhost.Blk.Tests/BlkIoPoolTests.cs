namespace Vhost.Blk.Tests;

/// <summary>The I/O pool under several producers: every item runs once, none waits for a later post.</summary>
public sealed class BlkIoPoolTests
{
    private sealed class CountingWork(int items) : IBlkIoWork
    {
        public readonly int[] Runs = new int[items];
        public readonly SemaphoreSlim RoundDone = new(0);
        public int Pending;

        public void Execute(int slot)
        {
            Interlocked.Increment(ref Runs[slot]);
            if (Interlocked.Decrement(ref Pending) == 0) RoundDone.Release();
        }
    }

    [Fact]
    public void EveryItemSubmittedByConcurrentProducersRunsOnceWithoutWaitingForALaterPost()
    {
        const int Producers = 8, Rounds = 10000;
        var work = new CountingWork(Producers * Rounds);
        using var pool = new BlkIoPool(4);
        using var start = new Barrier(Producers + 1);
        int refused = 0;
        var producers = Enumerable.Range(0, Producers).Select(p => new Thread(() =>
        {
            for (int r = 0; r < Rounds; r++)
            {
                // released together, so producers claim neighbouring cells at the same moment
                if (!start.SignalAndWait(TimeSpan.FromSeconds(10))) return;
                if (!pool.TrySubmit(work, r * Producers + p)) Interlocked.Increment(ref refused);
            }
        }) { IsBackground = true }).ToArray();
        foreach (var t in producers) t.Start();
        try
        {
            for (int r = 0; r < Rounds; r++)
            {
                Volatile.Write(ref work.Pending, Producers);
                Assert.True(start.SignalAndWait(TimeSpan.FromSeconds(10)), $"round {r}: producers did not start");
                // a stranded item runs only after a later post, and no round posts before this one completes
                Assert.True(work.RoundDone.Wait(TimeSpan.FromSeconds(5)),
                    $"round {r}: {Producers - Volatile.Read(ref work.Pending)} of {Producers} items ran; the rest were stranded");
            }
        }
        finally
        {
            start.RemoveParticipant();
            foreach (var t in producers) t.Join(TimeSpan.FromSeconds(10));
        }
        Assert.Equal(0, refused);
        Assert.All(work.Runs, n => Assert.Equal(1, n));
    }
}
