using Vhost.Device;
using Vhost.Interop;
using Vhost.Rings;

namespace Vhost.Runtime;

/// <summary>
/// How the runtime drives one queue of a device: its handler, its mode, and in event mode the watch on its kick fd.
/// Changed only on the device's reactor thread. The kick fd is unwatched before the control plane replaces or closes
/// it, so the reactor never reads a disposed fd.
/// </summary>
internal sealed class QueueService : IReadyHandler
{
    private readonly VhostDevice _device;
    private readonly Virtqueue _queue;
    private readonly Reactor _reactor;
    private readonly Action _serveAgain;
    private ulong _kickToken;
    private SafeFd? _watchedKick;
    private bool _againQueued;

    public QueueService(VhostDevice device, Virtqueue queue, Reactor reactor)
    {
        _device = device;
        _queue = queue;
        _reactor = reactor;
        _serveAgain = ServeAgain;
    }

    public IQueueHandler? Handler { get; private set; }

    public QueueMode Mode { get; private set; }

    public PollGroup? Group { get; private set; }

    /// <summary>Between the application's Serve and the device stopping: new work is served. Afterwards only completions are.</summary>
    public bool Serving { get; private set; }

    public void Attach(IQueueHandler handler, QueueMode mode, PollGroup? group)
    {
        Detach();
        Handler = handler;
        Mode = mode;
        Group = group;
        Serving = true;
        _queue.CompletionsPolled = mode == QueueMode.Polling;
        if (mode == QueueMode.Polling) group!.Add(_device, _queue.Index, handler);
        Update();
        // work may be waiting that no kick will announce (in-flight resubmissions, buffers added before the watch)
        if (mode == QueueMode.Event) Soon();
    }

    /// <summary>Stops taking new work (destroy_device); completions of work in flight are still published.</summary>
    public void StopServing()
    {
        if (!Serving) return;
        Serving = false;
        if (Mode == QueueMode.Polling) Group?.Remove(_device, _queue.Index);
        Mode = QueueMode.Event;
        _queue.CompletionsPolled = false;
        Update();
        // a completion posted while the poll thread still owned it is published from here now
        if (_queue.CompletionPending) Soon();
    }

    public void Detach()
    {
        StopServing();
        Handler = null;
        Group = null;
        Unwatch();
    }

    /// <summary>Watches the kick fd when an event-mode handler serves a running queue; call after every change of those.</summary>
    public void Update()
    {
        var kick = Serving && Mode == QueueMode.Event && _queue.Started ? _queue.KickFd : null;
        if (kick == _watchedKick) return;
        Unwatch();
        if (kick == null) return;
        _kickToken = _reactor.Add(kick, this);
        if (_kickToken != 0) _watchedKick = kick;
        else _device.FaultFromHandler($"queue {_queue.Index}: its kick fd cannot be watched", null);
    }

    /// <summary>Stops watching the kick fd: before it is replaced or closed.</summary>
    public void Unwatch()
    {
        _reactor.Remove(ref _kickToken, _watchedKick);
        _watchedKick = null;
    }

    void IReadyHandler.OnReady(uint events)
    {
        if (_watchedKick is { } kick) EventFd.Consume(kick);
        Serve();
    }

    /// <summary>Serves once on the reactor now (a kick, or a turn asked for earlier).</summary>
    private void Serve()
    {
        if (!Serving || Mode != QueueMode.Event || Handler is not { } h) return;
        bool again;
        try
        {
            again = h.Serve(_device, _queue.Index);
        }
        catch (Exception e)
        {
            _device.FaultFromHandler($"queue {_queue.Index} handler failed: {e.GetType().Name}: {e.Message}", e);
            return;
        }
        if (again) Soon();
    }

    /// <summary>One more turn soon for an event-mode queue that serves (work became possible without a kick).</summary>
    public void Nudge()
    {
        if (Serving && Mode == QueueMode.Event && Handler != null) Soon();
    }

    /// <summary>Publishes posted completions on the reactor (event mode, or after the device stopped serving).</summary>
    public void Complete()
    {
        if (Handler is not { } h || (Serving && Mode == QueueMode.Polling)) return;
        if (!_queue.TakeCompletionPending()) return;
        bool again;
        try
        {
            again = h.Complete(_device, _queue.Index);
        }
        catch (Exception e)
        {
            _device.FaultFromHandler($"queue {_queue.Index} completion failed: {e.GetType().Name}: {e.Message}", e);
            return;
        }
        if (again)
        {
            _queue.SetCompletionPending();
            Soon();
        }
    }

    private void Soon()
    {
        if (_againQueued) return;
        _againQueued = true;
        _reactor.RunSoon(_serveAgain);
    }

    private void ServeAgain()
    {
        _againQueued = false;
        Complete();
        Serve();
    }
}
