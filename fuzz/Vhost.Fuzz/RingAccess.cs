using Vhost.Memory;
using Vhost.Rings;

namespace Vhost.Fuzz;

/// <summary>What a target does with one popped chain; returns the used length to report.</summary>
internal interface IChainServer
{
    /// <summary>False: leave the chain unreturned (still in flight, as a back-end that crashed would).</summary>
    bool Serve(in DescriptorChain chain, BufferSegment[] segments, out uint written);
}

/// <summary>
/// The only place the harness calls the ring's own API (configure, start, pop, push, flush, stop), so a change of
/// that API (the per-burst lease) is adapted here and nowhere else. Device-level targets go through messages.
/// </summary>
internal static class RingAccess
{
    /// <summary>A queue configured and started directly, without a device (the chains and blk targets).</summary>
    public static Virtqueue? StartStandalone(GuestMemory memory, ulong features, int size, uint baseIndex, ulong desc, ulong avail, ulong used)
    {
        var q = new Virtqueue(0, Log.Logger);
        q.SetFeatures(features);
        if (q.SetSize((uint)size) != null) return null;
        q.SetAddress(new VringAddress(0, 0, desc, used, avail, 0));
        if (q.SetBase(baseIndex) != null) return null;
        // as SET_VRING_ENABLE would: a ring that is not enabled hands out no chains
        q.Enabled = true;
        return q.Start(memory) == null ? q : null;
    }

    public static void Stop(Virtqueue q) => q.Stop();

    /// <summary>
    /// Pops and serves bursts until the ring is empty or faulted (at most <paramref name="rounds"/> bursts),
    /// under the queue's lock when <paramref name="locked"/> (a device's queue; the control plane shares it).
    /// </summary>
    public static void Drain<TServer>(Virtqueue q, int burst, BufferSegment[] segments, int rounds, bool locked, ref TServer server)
        where TServer : struct, IChainServer
    {
        if (locked && !q.AccessLock.TryEnter()) return;
        try
        {
            Span<DescriptorChain> chains = stackalloc DescriptorChain[burst];
            for (int round = 0; round < rounds; round++)
            {
                if (!q.Started || q.Faulted) break;
                int n = q.Pop(chains, segments);
                if (n == 0 && !q.HasAvailable) break;
                for (int i = 0; i < n; i++)
                    if (server.Serve(chains[i], segments, out uint written)) q.PushUsed(chains[i], written);
                q.FlushUsed();
            }
        }
        finally
        {
            if (locked) q.AccessLock.Exit();
        }
    }
}

/// <summary>Touches every segment and returns all the writable bytes as used (the chains and messages targets).</summary>
internal struct TouchServer : IChainServer
{
    public bool Serve(in DescriptorChain chain, BufferSegment[] segments, out uint written)
    {
        ChainTarget.Touch(chain, segments);
        written = chain.WritableBytes;
        return true;
    }
}
