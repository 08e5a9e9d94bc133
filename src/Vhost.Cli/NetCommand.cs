using System.CommandLine;

namespace Vhost.Cli;

internal static class NetCommand
{
    public static Command Create() => new("net", "virtio-net back-end (not yet implemented)");
}
