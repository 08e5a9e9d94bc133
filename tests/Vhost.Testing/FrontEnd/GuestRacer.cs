using Vhost.Interop;

namespace Vhost.Testing.FrontEnd;

/// <summary>
/// A second guest vCPU: a background thread that rewrites one field of guest memory (1, 2, 4 or 8 bytes at a
/// guest-physical address) between a good and a bad value as fast as it can, while requests flow. A back-end
/// that reads the field twice (checks one value, uses another) shows up as a request served with a value that
/// neither the good nor the bad one gives. Each write is a compare-and-swap from the other of the two values, so
/// the racer never overwrites what someone else wrote there (the device marking a packed descriptor used, the
/// driver publishing its next index): it notices, stops (<see cref="Displaced"/>) and waits for the next
/// <see cref="Race"/>. It starts idle (or racing, with the racing constructor); <see cref="Hold"/> stops it with
/// the good value in place.
/// </summary>
internal sealed class GuestRacer : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    private readonly FrontEndMemory _memory;
    private readonly int _width;
    private readonly object _gate = new();
    private readonly Thread _thread;
    private NativeWindow _field;
    private ulong _good, _bad;
    private bool _armed, _running, _stopping, _displaced;
    private int _epoch;
    private long _flips;
    private Exception? _error;

    /// <summary>An idle racer for fields of <paramref name="width"/> bytes; <see cref="Race"/> starts it.</summary>
    public GuestRacer(FrontEndMemory memory, int width)
    {
        ArgumentNullException.ThrowIfNull(memory);
        if (width is not (1 or 2 or 4 or 8)) throw new ArgumentOutOfRangeException(nameof(width), "a field is 1, 2, 4 or 8 bytes");
        _memory = memory;
        _width = width;
        _thread = new Thread(Run) { IsBackground = true, Name = "guest-racer" };
        _thread.Start();
    }

    /// <summary>A racer already flipping the field at <paramref name="gpa"/>.</summary>
    public GuestRacer(FrontEndMemory memory, int width, ulong gpa, ulong good, ulong bad) : this(memory, width) => Race(gpa, good, bad);

    /// <summary>Writes made so far (each one a change of the field between the two values).</summary>
    public long Flips => Interlocked.Read(ref _flips);

    /// <summary>The last race stopped because the field held neither value (someone else wrote it).</summary>
    public bool Displaced
    {
        get
        {
            lock (_gate) return _displaced;
        }
    }

    /// <summary>
    /// Starts flipping the field at <paramref name="gpa"/> (naturally aligned, inside one mapped region) between
    /// <paramref name="good"/> and <paramref name="bad"/>, after holding any earlier race. The field should hold one
    /// of the two already; if it holds neither, the racer stops at once as displaced. Returns once the thread is
    /// racing (or has been displaced).
    /// </summary>
    public void Race(ulong gpa, ulong good, ulong bad)
    {
        if (gpa % (ulong)_width != 0) throw new ArgumentException($"0x{gpa:x} is not aligned to {_width} bytes", nameof(gpa));
        if (good == bad) throw new ArgumentException("the good and the bad value are the same", nameof(bad));
        ulong mask = _width == 8 ? ulong.MaxValue : (1UL << (8 * _width)) - 1;
        if ((good & ~mask) != 0 || (bad & ~mask) != 0) throw new ArgumentOutOfRangeException(nameof(good), $"values wider than {_width} bytes");
        var field = _memory.Window(gpa, (ulong)_width);
        Hold();
        lock (_gate)
        {
            _field = field;
            _good = good;
            _bad = bad;
            _displaced = false;
            _armed = true;
            Volatile.Write(ref _epoch, _epoch + 1);
            Monitor.PulseAll(_gate);
            // racing means the thread has picked the field up: a request made after this meets a moving value
            Await(() => _running || !_armed);
        }
    }

    /// <summary>Stops flipping; returns when the thread is idle, the field holding the good value unless it was displaced.</summary>
    public void Hold()
    {
        lock (_gate)
        {
            _armed = false;
            Volatile.Write(ref _epoch, _epoch + 1);
            Await(() => !_running);
        }
        if (_error is { } e) throw new InvalidOperationException("the racer thread failed", e);
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _armed = false;
            _stopping = true;
            Volatile.Write(ref _epoch, _epoch + 1);
            Monitor.PulseAll(_gate);
        }
        _thread.Join(Timeout);
    }

    // under _gate: waits (with Monitor.Wait, which lets the thread in) for a state the racer thread reports
    private void Await(Func<bool> condition)
    {
        var end = DateTime.UtcNow + Timeout;
        while (!condition())
        {
            var left = end - DateTime.UtcNow;
            if (left <= TimeSpan.Zero || (_error != null && !_running)) break;
            Monitor.Wait(_gate, left);
        }
        if (!condition() && _error == null) throw new TimeoutException("the racer thread did not answer");
    }

    private void Run()
    {
        try
        {
            while (true)
            {
                NativeWindow field;
                ulong good, bad;
                int epoch;
                lock (_gate)
                {
                    while (!_armed && !_stopping) Monitor.Wait(_gate);
                    if (_stopping) return;
                    field = _field;
                    good = _good;
                    bad = _bad;
                    epoch = _epoch;
                    _running = true;
                    Monitor.PulseAll(_gate);
                }
                bool displaced = _width switch
                {
                    1 => Flip8(ref field.Ref<byte>(0), (byte)good, (byte)bad, epoch),
                    2 => Flip16(ref field.Ref<ushort>(0), (ushort)good, (ushort)bad, epoch),
                    4 => Flip32(ref field.Ref<uint>(0), (uint)good, (uint)bad, epoch),
                    _ => Flip64(ref field.Ref<ulong>(0), good, bad, epoch),
                };
                lock (_gate)
                {
                    _running = false;
                    if (displaced && _epoch == epoch)
                    {
                        _displaced = true;
                        _armed = false;
                    }
                    Monitor.PulseAll(_gate);
                }
            }
        }
        catch (Exception e)
        {
            lock (_gate)
            {
                _error = e;
                _running = false;
                _armed = false;
                Monitor.PulseAll(_gate);
            }
        }
    }

    // One loop per width: each compare-and-swap writes only over one of our own two values, so a third value
    // (someone else's write) ends the race. On the way out the good value is put back if ours is the bad one.
    private bool Flip8(ref byte f, byte good, byte bad, int epoch)
    {
        long n = 0;
        while (Volatile.Read(ref _epoch) == epoch)
        {
            byte seen = Interlocked.CompareExchange(ref f, bad, good);
            if (seen != good && seen != bad) return Count(n, true);
            n += seen == good ? 1 : 0;
            seen = Interlocked.CompareExchange(ref f, good, bad);
            if (seen != good && seen != bad) return Count(n, true);
            n += seen == bad ? 1 : 0;
            if (n >= 1024) n = Publish(n);
        }
        Interlocked.CompareExchange(ref f, good, bad);
        return Count(n, false);
    }

    private bool Flip16(ref ushort f, ushort good, ushort bad, int epoch)
    {
        long n = 0;
        while (Volatile.Read(ref _epoch) == epoch)
        {
            ushort seen = Interlocked.CompareExchange(ref f, bad, good);
            if (seen != good && seen != bad) return Count(n, true);
            n += seen == good ? 1 : 0;
            seen = Interlocked.CompareExchange(ref f, good, bad);
            if (seen != good && seen != bad) return Count(n, true);
            n += seen == bad ? 1 : 0;
            if (n >= 1024) n = Publish(n);
        }
        Interlocked.CompareExchange(ref f, good, bad);
        return Count(n, false);
    }

    private bool Flip32(ref uint f, uint good, uint bad, int epoch)
    {
        long n = 0;
        while (Volatile.Read(ref _epoch) == epoch)
        {
            uint seen = Interlocked.CompareExchange(ref f, bad, good);
            if (seen != good && seen != bad) return Count(n, true);
            n += seen == good ? 1 : 0;
            seen = Interlocked.CompareExchange(ref f, good, bad);
            if (seen != good && seen != bad) return Count(n, true);
            n += seen == bad ? 1 : 0;
            if (n >= 1024) n = Publish(n);
        }
        Interlocked.CompareExchange(ref f, good, bad);
        return Count(n, false);
    }

    private bool Flip64(ref ulong f, ulong good, ulong bad, int epoch)
    {
        long n = 0;
        while (Volatile.Read(ref _epoch) == epoch)
        {
            ulong seen = Interlocked.CompareExchange(ref f, bad, good);
            if (seen != good && seen != bad) return Count(n, true);
            n += seen == good ? 1 : 0;
            seen = Interlocked.CompareExchange(ref f, good, bad);
            if (seen != good && seen != bad) return Count(n, true);
            n += seen == bad ? 1 : 0;
            if (n >= 1024) n = Publish(n);
        }
        Interlocked.CompareExchange(ref f, good, bad);
        return Count(n, false);
    }

    private long Publish(long n)
    {
        Interlocked.Add(ref _flips, n);
        return 0;
    }

    private bool Count(long n, bool displaced)
    {
        Interlocked.Add(ref _flips, n);
        return displaced;
    }
}

/// <summary>
/// Records exceptions no thread caught while it is alive (AppDomain.UnhandledException): the runtime ends the
/// process after such an exception, so this is what names the thread and the exception in the test's output.
/// </summary>
internal sealed class UnhandledExceptionLog : IDisposable
{
    private readonly List<string> _seen = [];

    public UnhandledExceptionLog() => AppDomain.CurrentDomain.UnhandledException += OnUnhandled;

    public IReadOnlyList<string> Seen
    {
        get
        {
            lock (_seen) return [.. _seen];
        }
    }

    private void OnUnhandled(object sender, UnhandledExceptionEventArgs e)
    {
        string text = $"unhandled on thread '{Thread.CurrentThread.Name}': {e.ExceptionObject}";
        lock (_seen) _seen.Add(text);
        Console.Error.WriteLine(text);
    }

    public void Dispose() => AppDomain.CurrentDomain.UnhandledException -= OnUnhandled;
}
