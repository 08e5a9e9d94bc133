using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Vhost.Interop;

namespace Vhost.Runtime;

/// <summary>Something a reactor calls back on its own thread when a watched fd is ready.</summary>
internal interface IReadyHandler
{
    void OnReady(uint events);
}

/// <summary>
/// One event loop thread: an epoll over connection sockets, listeners, kick fds and completion fds, plus work
/// posted from other threads, work to run again soon, and timers. Everything a device's control plane does runs
/// on its reactor's thread, so the control plane never races the device's event-driven data path. Nothing a
/// handler throws reaches the thread root: handlers contain their own faults, and the loop logs what escapes.
/// </summary>
internal sealed class Reactor : IDisposable
{
    private const ulong WakeToken = 0;

    private readonly Epoll _epoll = new();
    private readonly SafeFd _wake = EventFd.Create(nonBlocking: true);
    private readonly ConcurrentQueue<Action> _posted = new();
    private readonly Dictionary<ulong, IReadyHandler> _handlers = [];
    private readonly PriorityQueue<Action, long> _timers = new();
    private List<Action> _soon = [];
    private List<Action> _running = [];
    private readonly ILogger _logger;
    private readonly Thread _thread;
    private ulong _nextToken = 1;
    private volatile bool _stopping;
    private int _load;

    public Reactor(string name, ILogger logger)
    {
        _logger = logger;
        _epoll.Add(_wake, Epoll.In, WakeToken);
        _thread = new Thread(Run) { IsBackground = true, Name = name };
        _thread.Start();
    }

    /// <summary>Devices and sockets assigned to this reactor (for spreading new ones).</summary>
    public int Load => Volatile.Read(ref _load);

    public void AddLoad(int delta) => Interlocked.Add(ref _load, delta);

    public bool IsCurrentThread => Thread.CurrentThread == _thread;

    /// <summary>Runs <paramref name="action"/> on the reactor thread (soon, in order of posting).</summary>
    public void Post(Action action)
    {
        _posted.Enqueue(action);
        EventFd.Signal(_wake);
    }

    /// <summary>Runs <paramref name="action"/> on the reactor thread and waits for it; inline when already there.</summary>
    public void Invoke(Action action, TimeSpan timeout)
    {
        if (IsCurrentThread || _stopping)
        {
            action();
            return;
        }
        using var done = new ManualResetEventSlim(false);
        Exception? error = null;
        Post(() =>
        {
            try
            {
                action();
            }
            catch (Exception e)
            {
                error = e;
            }
            finally
            {
                done.Set();
            }
        });
        if (!done.Wait(timeout)) throw new TimeoutException($"{_thread.Name} did not run the request within {timeout}");
        if (error != null) throw new InvalidOperationException($"{_thread.Name}: {error.Message}", error);
    }

    /// <summary>Watches <paramref name="fd"/> for input; reactor thread only. Returns the token for <see cref="Remove"/>, 0 if the fd cannot be watched.</summary>
    public ulong Add(SafeFd fd, IReadyHandler handler)
    {
        ulong token = _nextToken++;
        if (!_epoll.Add(fd, Epoll.In | Epoll.RdHup, token)) return 0;
        _handlers[token] = handler;
        return token;
    }

    /// <summary>Stops watching (reactor thread only); an event already returned for the fd is dropped.</summary>
    public void Remove(ref ulong token, SafeFd? fd)
    {
        if (token == 0) return;
        _handlers.Remove(token);
        if (fd != null) _epoll.Remove(fd);
        token = 0;
    }

    /// <summary>Pauses or resumes input events for a watched fd (reactor thread only).</summary>
    public void SetInterest(ulong token, SafeFd fd, bool input) =>
        _epoll.Modify(fd, input ? Epoll.In | Epoll.RdHup : 0, token);

    /// <summary>Runs <paramref name="action"/> on the next turn of the loop, without waiting for an event (reactor thread only).</summary>
    public void RunSoon(Action action) => _soon.Add(action);

    /// <summary>Runs <paramref name="action"/> after <paramref name="delay"/> (reactor thread only).</summary>
    public void Schedule(TimeSpan delay, Action action) =>
        _timers.Enqueue(action, Environment.TickCount64 + (long)Math.Max(0, delay.TotalMilliseconds));

    private void Run()
    {
        Span<Epoll.Event> events = stackalloc Epoll.Event[64];
        while (!_stopping)
        {
            int timeout = -1;
            if (_soon.Count > 0 || !_posted.IsEmpty) timeout = 0;
            else if (_timers.TryPeek(out _, out long due)) timeout = (int)Math.Clamp(due - Environment.TickCount64, 0, int.MaxValue);
            int n;
            try
            {
                n = _epoll.Wait(events, timeout);
            }
            catch (NativeException e)
            {
                _logger.LogCritical("{Reactor}: {Error}; the reactor stops", _thread.Name, e.Message);
                return;
            }
            for (int i = 0; i < n; i++)
            {
                ulong token = events[i].Token;
                if (token == WakeToken)
                {
                    EventFd.Consume(_wake);
                    continue;
                }
                // a handler removed earlier in this batch gets no call
                if (_handlers.TryGetValue(token, out var handler)) Guard(handler, events[i].Events);
            }
            while (_posted.TryDequeue(out var action)) Guard(action);
            if (_soon.Count > 0)
            {
                (_running, _soon) = (_soon, _running);
                foreach (var action in _running) Guard(action);
                _running.Clear();
            }
            long now = Environment.TickCount64;
            while (_timers.TryPeek(out _, out long at) && at <= now) Guard(_timers.Dequeue());
        }
    }

    private void Guard(IReadyHandler handler, uint events)
    {
        try
        {
            handler.OnReady(events);
        }
        catch (Exception e)
        {
            _logger.LogError(e, "{Reactor}: a handler failed and was not contained", _thread.Name);
        }
    }

    private void Guard(Action action)
    {
        try
        {
            action();
        }
        catch (Exception e)
        {
            _logger.LogError(e, "{Reactor}: posted work failed and was not contained", _thread.Name);
        }
    }

    public void Dispose()
    {
        if (_stopping) return;
        _stopping = true;
        EventFd.Signal(_wake);
        if (!IsCurrentThread) _thread.Join();
        _epoll.Dispose();
        _wake.Dispose();
    }
}
