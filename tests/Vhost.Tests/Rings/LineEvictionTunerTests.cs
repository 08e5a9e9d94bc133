using System.Diagnostics;
using Vhost.Rings;

namespace Vhost.Tests.Rings;

/// <summary>The tuner fed a simulated queue whose rate depends on the mode, one millisecond at a time.</summary>
public sealed class LineEvictionTunerTests
{
    private static readonly long Ms = Stopwatch.Frequency / 1000;

    /// <summary>Runs <paramref name="ms"/> milliseconds at the given frames per ms; returns the share of them spent evicting.</summary>
    private static double Run(ref LineEvictionTuner t, ref long now, int ms, int offRate, int onRate)
    {
        int evicting = 0;
        for (int i = 0; i < ms; i++)
        {
            now += Ms;
            if (t.Evict) evicting++;
            t.CountAt(t.Evict ? onRate : offRate, now);
        }
        return (double)evicting / ms;
    }

    [Theory]
    [InlineData(7000, 8300, true)]    // on another core complex: eviction 18 % faster
    [InlineData(17000, 13600, false)] // sharing a cache: 20 % slower
    [InlineData(9000, 9000, false)]   // no difference: stay with DPDK's way
    [InlineData(9000, 9150, false)]   // within the margin
    public void KeepsTheFasterMode(int offRate, int onRate, bool evict)
    {
        var t = new LineEvictionTuner();
        long now = 1_000_000;
        Run(ref t, ref now, 200, offRate, onRate);
        Assert.Equal(1, t.Probes);
        Assert.Equal(evict, t.Evict);
        // between probes the decision holds: over 10 s the faster mode runs nearly all the time
        double share = Run(ref t, ref now, 10_000, offRate, onRate);
        Assert.InRange(evict ? share : 1 - share, 0.97, 1.0);
        Assert.InRange(t.Probes, 5, 7);
    }

    [Fact]
    public void APlacementChangeIsFollowedWithinAProbe()
    {
        var t = new LineEvictionTuner();
        long now = 1_000_000;
        Run(ref t, ref now, 1000, 17000, 13600);
        Assert.False(t.Evict);
        int probes = t.Probes;
        // the host moves a vCPU: the rate halves and eviction now wins
        Run(ref t, ref now, 150, 7000, 8300);
        Assert.True(t.Probes > probes, "a rate that halved did not start a probe");
        Assert.True(t.Evict);
        Run(ref t, ref now, 150, 17000, 13600);
        Assert.False(t.Evict);
    }
}
