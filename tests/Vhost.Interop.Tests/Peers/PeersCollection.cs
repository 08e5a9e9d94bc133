namespace Vhost.Interop.Tests.Peers;

/// <summary>
/// Every test that runs a real peer (testpmd, QEMU, qemu-storage-daemon) joins this collection: they run
/// one at a time, since the peers busy-poll both cores of the machine. Use <c>[Collection("peers")]</c>.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class PeersCollection
{
    public const string Name = "peers";
}
