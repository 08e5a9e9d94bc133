using System.CommandLine;
using Vhost.Cli;

var root = new RootCommand("vhost: vhost-user back-ends (virtio-net, virtio-blk, virtio-crypto) built on Vhost for .NET")
{
    NetCommand.Create(),
    BlkCommand.Create(),
    CryptoCommand.Create(),
};
var parsed = root.Parse(args);
try
{
    // exit codes (docs/cli.md): 0 stopped by SIGINT/SIGTERM, 1 could not serve, 2 bad command line
    int rc = parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
    return parsed.Errors.Count > 0 ? 2 : rc;
}
catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or InvalidOperationException or Vhost.Interop.NativeException)
{
    Console.Error.WriteLine($"vhost: {e.Message}");
    return 1;
}
