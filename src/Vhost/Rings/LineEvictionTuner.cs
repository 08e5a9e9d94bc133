using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace Vhost.Rings;

/// <summary>Whether <see cref="Virtqueue.Take"/> evicts the lines of the buffers it has copied out.</summary>
public enum LineEviction
{
    /// <summary>Never (DPDK's behaviour).</summary>
    Off,

    /// <summary>When a running measurement finds the guest sends faster that way (<see cref="LineEvictionTuner"/>).</summary>
    Tuned,

    /// <summary>Always.</summary>
    Always,
}

/// <summary>
/// Decides, by measuring the queue's rate, whether evicting the lines of taken buffers lets the guest send
/// faster. It depends on where the host put the two cores. Far apart (this VM's low level), the front-end
/// writes its next frame into a line it finds in memory instead of taking it back from our cache: 18 % faster.
/// Sharing a cache (the high level), it has to go to memory for a line it would have found next door: 20 %
/// slower. The host moves vCPUs when it likes, so the tuner keeps measuring. A probe is four windows of
/// <see cref="Window"/>, the modes in the order A B B A (A alternating between probes, so a steady drift
/// favours neither); eviction stays on if its windows ran at least <see cref="Margin"/> faster. The decision
/// holds for <see cref="Interval"/>, or until a window's rate moves more than <see cref="Shift"/> away from the
/// rate it was decided on.
/// </summary>
/// <remarks>
/// The rate is frames taken per second: the guest's rate while we keep up with it, ours when we do not (then
/// eviction, which costs us a few ns per line, measures slower and stays off). Probing costs a little: about
/// 40 ms in the worse mode every 2 s.
/// </remarks>
internal struct LineEvictionTuner
{
    internal static readonly long Window = Stopwatch.Frequency / 50;
    internal static readonly long Interval = Stopwatch.Frequency * 2;
    internal const double Margin = 1.03;
    internal const double Shift = 0.3;

    private long _start;
    private long _frames;
    private int _calls;
    private int _probe;          // 0: holding a decision; 1-4: the probe window running
    private bool _firstMode;     // the mode of probe windows 1 and 4
    private long _decidedAt;
    private double _decidedRate; // frames per Stopwatch tick
    private long _onFrames, _onTicks, _offFrames, _offTicks;

    /// <summary>The mode for the frames taken now.</summary>
    public bool Evict { get; private set; }

    /// <summary>Probes run, for tests and diagnostics.</summary>
    public int Probes { get; private set; }

    /// <summary>Counts frames taken; looks at the clock every eighth call.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Count(int frames)
    {
        _frames += frames;
        if ((++_calls & 7) == 0) Tick(Stopwatch.GetTimestamp());
    }

    /// <summary><see cref="Count"/> with the clock given, for tests.</summary>
    internal void CountAt(int frames, long now)
    {
        _frames += frames;
        Tick(now);
    }

    private void Tick(long now)
    {
        if (_start == 0)
        {
            _start = now;
            _frames = 0;
            StartProbe();
            return;
        }
        long ticks = now - _start;
        if (ticks < Window) return;
        double rate = (double)_frames / ticks;
        if (_probe == 0)
        {
            if (now - _decidedAt >= Interval || Math.Abs(rate - _decidedRate) > Shift * _decidedRate) StartProbe();
        }
        else
        {
            if (Evict)
            {
                _onFrames += _frames;
                _onTicks += ticks;
            }
            else
            {
                _offFrames += _frames;
                _offTicks += ticks;
            }
            if (_probe == 4)
            {
                double on = (double)_onFrames / _onTicks, off = (double)_offFrames / _offTicks;
                Evict = on >= off * Margin;
                _decidedRate = Evict ? on : off;
                _decidedAt = now;
                _probe = 0;
            }
            else
            {
                _probe++;
                Evict = _probe == 4 ? _firstMode : !_firstMode;
            }
        }
        _start = now;
        _frames = 0;
    }

    private void StartProbe()
    {
        Probes++;
        _probe = 1;
        _firstMode = !_firstMode;
        Evict = _firstMode;
        _onFrames = _onTicks = _offFrames = _offTicks = 0;
    }
}
