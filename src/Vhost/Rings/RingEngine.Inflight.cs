using Microsoft.Extensions.Logging;
using Vhost.Interop;

namespace Vhost.Rings;

/// <summary>
/// In-flight tracking (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD), the part both formats share: the queue's piece of the
/// shared area, the counter that orders pops, and the chains found in flight at start, popped again before anything
/// new. The layouts are the formats' own (SplitRing.Inflight.cs, PackedRing.Inflight.cs). The area outlives this
/// process (the front-end keeps its fd), so after a crash the next back-end sees what was popped and not completed.
/// </summary>
internal abstract partial class RingEngine
{
    protected NativeWindow _inflightRegion;
    protected int _inflightQueueSize;
    protected bool _inflightOn;
    protected ulong _inflightCounter;
    protected ushort[] _resubmit = [];
    protected int _resubmitCount;
    protected int _resubmitAt;

    /// <summary>Chains found in flight when the queue last started and popped again first.</summary>
    internal int InflightResubmitted { get; private protected set; }

    /// <summary>Whether pops and completions are being recorded in a shared in-flight area.</summary>
    internal bool InflightTracking => _inflightOn;

    /// <summary>Attaches (or with an empty window detaches) this queue's part of the in-flight area; used at the next start.</summary>
    internal void SetInflightRegion(NativeWindow region, int queueSize)
    {
        _inflightRegion = region;
        _inflightQueueSize = queueSize;
        _inflightOn = false;
    }

    /// <summary>At start: repair the last completion if it was cut short, then queue every chain still in flight, oldest first.</summary>
    private void RecoverInflight()
    {
        _inflightOn = false;
        _resubmitCount = _resubmitAt = 0;
        InflightResubmitted = 0;
        if (_inflightRegion.IsEmpty) return;
        RecoverInflightCore();
    }

    protected abstract void RecoverInflightCore();

    /// <summary>The chain (id and slots) of a resubmitted entry, before its walk.</summary>
    protected abstract DescriptorChain ResubmittedChain(ushort entry);

    protected abstract Walk WalkResubmitted(ushort entry, Span<BufferSegment> segments, ref DescriptorChain chain, ref string? reason);

    /// <summary>Pops the chains found in flight at start before anything new (split: heads; packed: head entries of the area).</summary>
    protected void PopResubmitted(Span<DescriptorChain> chains, Span<BufferSegment> segments, ref int n, ref int used)
    {
        while (_resubmitAt < _resubmitCount && n < chains.Length)
        {
            ushort head = _resubmit[_resubmitAt];
            var chain = ResubmittedChain(head);
            string? reason = null;
            var r = WalkResubmitted(head, segments[used..], ref chain, ref reason);
            if (r == Walk.Miss) break;
            if (r == Walk.NoRoom)
            {
                if (used > 0) break;
                r = Walk.Bad;
                reason = $"chain needs more than {segments.Length} segments";
            }
            _resubmitAt++;
            if (r == Walk.Bad)
            {
                BadChain(reason ?? "bad resubmitted chain");
                PushUsed(chain.Id, chain.SlotCount, 0);
                continue;
            }
            chain.SegmentStart = used;
            used += chain.SegmentCount;
            chains[n++] = chain;
        }
    }
}
