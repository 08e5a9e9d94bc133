using System.CommandLine;
using Vhost.Cli;

var root = new RootCommand("vhost: vhost-user back-ends (virtio-net, virtio-blk, virtio-crypto) built on Vhost for .NET")
{
    NetCommand.Create(),
    BlkCommand.Create(),
    CryptoCommand.Create(),
};
return root.Parse(args).Invoke();
