using System.CommandLine;

namespace Vhost.Cli;

internal static class BlkCommand
{
    public static Command Create() => new("blk", "virtio-blk back-end (not yet implemented)");
}
