using Microsoft.Extensions.Logging;
using Vhost.Interop;
using Vhost.Runtime;

namespace Vhost.Device;

/// <summary>
/// The device on its reactor: which handler serves each queue and how, the completion eventfd that off-thread
/// work signals, a GET_VRING_BASE waiting for work in flight, and a close that releases memory only after
/// that work has ended. Everything here runs on the device's reactor thread.
/// </summary>
public sealed partial class VhostDevice
{
    private QueueService[] _services = [];
    private readonly SafeFd _completionFd = EventFd.Create(nonBlocking: true);
    private ulong _completionToken;
    private CompletionWatch? _completionWatch;

    // GET_VRING_BASE waiting for the queue's work in flight: the queue, when it began, and who to tell
    private int _pendingStopQueue = -1;
    private long _pendingStopSince;
    private Action? _pendingDone;

    // a close waiting for work in flight, and who to tell when the device is released
    private Action? _onClosed;
    private long _closingSince;
    private bool _closeWarned;

    /// <summary>How long GET_VRING_BASE and a disconnect wait for work in flight before the device is given up.</summary>
    internal static TimeSpan DrainTimeout { get; set; } = TimeSpan.FromSeconds(30);

    internal Reactor Reactor { get; private set; } = null!;


    /// <summary>Joins the reactor: called once, on that reactor's thread, before the first message.</summary>
    internal void AttachToReactor(Reactor reactor)
    {
        Reactor = reactor;
        _services = new QueueService[_queues.Length];
        for (int i = 0; i < _queues.Length; i++)
        {
            _services[i] = new QueueService(this, _queues[i], reactor);
            _queues[i].CompletionSignal = _completionFd;
        }
        _completionWatch = new CompletionWatch(this);
        _completionToken = reactor.Add(_completionFd, _completionWatch);
    }

    /// <summary>
    /// Serves queue <paramref name="queue"/> with <paramref name="handler"/> until the device stops: woken by kicks
    /// (<see cref="QueueMode.Event"/>) or polled by a thread of <paramref name="group"/> (<see cref="QueueMode.Polling"/>).
    /// Usually called from <see cref="VhostDeviceOps.NewDevice"/>. Replaces an earlier handler of the queue.
    /// </summary>
    public void Serve(int queue, IQueueHandler handler, QueueMode mode = QueueMode.Event, PollGroup? group = null)
    {
        ArgumentNullException.ThrowIfNull(handler);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)queue, (uint)_queues.Length, nameof(queue));
        if (mode == QueueMode.Polling) ArgumentNullException.ThrowIfNull(group);
        OnReactor(() => _services[queue].Attach(handler, mode, group));
    }

    /// <summary>Stops serving a queue (work in flight still completes).</summary>
    public void StopServing(int queue)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)queue, (uint)_queues.Length, nameof(queue));
        OnReactor(() => _services[queue].StopServing());
    }

    private void OnReactor(Action action)
    {
        if (Reactor == null) throw new InvalidOperationException("the device is not attached to a runtime");
        Reactor.Invoke(action, TimeSpan.FromSeconds(10));
    }

    /// <summary>A handler, a storage or a callback threw: the device is faulted (one line, with the exception), never the process.</summary>
    internal void FaultFromHandler(string reason, Exception? error)
    {
        if (_fault == null && error != null) _logger.LogError(error, "device {Id} ({Path}): {Reason}", Id, SocketPath, reason);
        Fault(reason);
    }

    /// <summary>Runs an application callback; an exception faults the device instead of reaching the reactor.</summary>
    private bool Callback(string name, Func<bool> call, bool onError = false)
    {
        try
        {
            return call();
        }
        catch (Exception e)
        {
            FaultFromHandler($"the application's {name} callback threw {e.GetType().Name}: {e.Message}", e);
            return onError;
        }
    }

    private void Callback(string name, Action call) => Callback(name, () =>
    {
        call();
        return true;
    });

    /// <summary>After a queue's kick fd, start or stop: keep the kick watch in step (before the old fd is closed).</summary>
    private void UnwatchKick(int queue)
    {
        if (_services.Length > 0) _services[queue].Unwatch();
    }

    private void UpdateKickWatch(int queue)
    {
        if (_services.Length > 0) _services[queue].Update();
    }

    /// <summary>Gives every event-mode served queue one more turn soon (on the reactor, after the current message).</summary>
    private void NudgeServices()
    {
        foreach (var s in _services) s.Nudge();
    }

    /// <summary>destroy_device for the runtime: handlers take no new work, completions still go out.</summary>
    private void StopServingAll()
    {
        foreach (var s in _services) s.StopServing();
    }

    private void OnCompletions()
    {
        EventFd.Consume(_completionFd);
        foreach (var s in _services) s.Complete();
        CheckPendingStop();
        CheckClosing();
    }

    /// <summary>GET_VRING_BASE found work in flight: the reply waits (the connection reads nothing meanwhile).</summary>
    private void BeginPendingStop(int queue)
    {
        _pendingStopQueue = queue;
        _pendingStopSince = Environment.TickCount64;
        Reactor.Schedule(TimeSpan.FromMilliseconds(20), PollPendingStop);
    }

    private void PollPendingStop()
    {
        if (_pendingStopQueue < 0) return;
        CheckPendingStop();
        if (_pendingStopQueue >= 0) Reactor.Schedule(TimeSpan.FromMilliseconds(20), PollPendingStop);
    }

    /// <summary>Whether a GET_VRING_BASE reply is waiting; the connection pauses until <paramref name="done"/> runs.</summary>
    internal bool HasPendingReply(Action done)
    {
        if (_pendingStopQueue < 0) return false;
        _pendingDone = done;
        return true;
    }

    private void CheckPendingStop()
    {
        int index = _pendingStopQueue;
        if (index < 0) return;
        var q = _queues[index];
        if (q.WorkInFlight > 0)
        {
            if (Environment.TickCount64 - _pendingStopSince < (long)DrainTimeout.TotalMilliseconds) return;
            Fault($"GET_VRING_BASE for queue {index}: {q.WorkInFlight} request(s) still in flight after {DrainTimeout.TotalSeconds:F0} s");
        }
        _pendingStopQueue = -1;
        uint b = StopQueue(q);
        _pendingReply.VringState((uint)index, b);
        var done = _pendingDone;
        _pendingDone = null;
        done?.Invoke();
    }

    private readonly ReplyBuffer _pendingReply = new();

    /// <summary>The reply of the GET_VRING_BASE that waited.</summary>
    internal ReplyBuffer PendingReply => _pendingReply;

    /// <summary>The connection ended: stop, and release everything once no work is in flight (or it timed out).</summary>
    internal void BeginClose(Action closed)
    {
        _requestClose = null;
        ClosePostcopy();
        _onClosed = closed;
        _closingSince = Environment.TickCount64;
        StopRunning("connection closed");
        StopServingAll();
        foreach (var q in _queues) q.BeginDrain();
        CheckClosing();
        if (_onClosed != null) Reactor.Schedule(TimeSpan.FromMilliseconds(50), PollClosing);
    }

    private void PollClosing()
    {
        if (_onClosed == null) return;
        CheckClosing();
        if (_onClosed != null) Reactor.Schedule(TimeSpan.FromMilliseconds(50), PollClosing);
    }

    private void CheckClosing()
    {
        if (_onClosed == null) return;
        int inFlight = _queues.Sum(q => q.WorkInFlight);
        if (inFlight > 0)
        {
            // the memory stays mapped for the work; the device is released when it completes
            if (!_closeWarned && Environment.TickCount64 - _closingSince > (long)DrainTimeout.TotalMilliseconds)
            {
                _closeWarned = true;
                _logger.LogWarning("device {Id} ({Path}): {Count} request(s) still in flight {Seconds:F0} s after the connection closed",
                    Id, SocketPath, inFlight, DrainTimeout.TotalSeconds);
            }
            return;
        }
        var closed = _onClosed;
        _onClosed = null;
        foreach (var s in _services) s.Detach();
        Reactor.Remove(ref _completionToken, _completionFd);
        Release();
        _completionFd.Dispose();
        Reactor.AddLoad(-1);
        closed();
    }

    private sealed class CompletionWatch(VhostDevice device) : IReadyHandler
    {
        public void OnReady(uint events) => device.OnCompletions();
    }
}
