using Microsoft.Extensions.Logging;
using Vhost.Device;
using Vhost.Rings;
using Vhost.Runtime;

namespace Vhost.Crypto;

/// <summary>
/// Serves one data queue of a crypto device on the runtime: on a kick it pops bursts through a lease and runs each
/// request at once (the work is the CPU's, nothing to wait for), in order. One per device queue, for the device's life.
/// </summary>
internal sealed class CryptoQueue : IQueueHandler
{
    private const int Burst = 32;
    private const int SegmentsPerBurst = 2048;
    /// <summary>Bursts before the handler lets other devices have the thread.</summary>
    private const int BurstsPerTurn = 8;

    private readonly Virtqueue _queue;
    private readonly CryptoRequestProcessor _processor;
    private readonly DescriptorChain[] _chains = new DescriptorChain[Burst];
    private readonly BufferSegment[] _segments = new BufferSegment[SegmentsPerBurst];
    private long _serviceAllocated;
    private bool _warm;

    public CryptoQueue(Virtqueue queue, CryptoSessions sessions, VirtioCryptoOptions options, ILogger logger)
    {
        _queue = queue;
        _processor = new CryptoRequestProcessor(sessions, queue.Index, options.MaxDataLength, options.MaxAadLength, Stats, logger);
    }

    public CryptoStats Stats { get; } = new();

    /// <summary>Bytes allocated serving the ring after its first turn: what the data path costs the GC.</summary>
    internal long ServiceAllocatedBytes => Interlocked.Read(ref _serviceAllocated);

    public bool Serve(VhostDevice device, int queue)
    {
        // a faulted queue takes no lease again: nothing is left to do until its device closes
        if (!_queue.TryBeginBurst(out var burst)) return _queue.Started && !_queue.Faulted;
        long before = GC.GetAllocatedBytesForCurrentThread();
        bool again = false;
        try
        {
            burst.SetNotificationsEnabled(false);
            int bursts = 0;
            while (PopAndRun(burst) > 0)
            {
                burst.FlushUsed();
                if (++bursts == BurstsPerTurn)
                {
                    again = true;
                    break;
                }
            }
            burst.SetNotificationsEnabled(true);
            // a request that arrived while notifications were off would otherwise wait for the next kick
            if (!again && burst.HasAvailable) again = true;
            burst.FlushUsed();
        }
        finally
        {
            burst.Dispose();
        }
        // the first turn JITs and initialises statics; what counts is every turn after it
        if (_warm) Interlocked.Add(ref _serviceAllocated, GC.GetAllocatedBytesForCurrentThread() - before);
        _warm = true;
        return again;
    }

    private int PopAndRun(VirtqueueBurst burst)
    {
        int n = burst.Pop(_chains, _segments);
        for (int i = 0; i < n; i++)
        {
            ref readonly var chain = ref _chains[i];
            uint written = _processor.Process(in chain, _segments);
            // results and the status byte may lie anywhere in the writable part
            burst.LogWritten(in chain, _segments, written);
            burst.PushUsed(in chain, written);
        }
        return n;
    }
}
