// The smallest vhost-user-blk back-end, in the spirit of DPDK's examples/vhost_blk: a 128 MiB RAM disk
// on the socket given as the only argument (default /tmp/vhost-blk.sock) until Ctrl-C.
// Try: qemu-system-x86_64 ... -object memory-backend-memfd,id=m,size=1G,share=on -numa node,memdev=m
//        -chardev socket,id=c0,path=/tmp/vhost-blk.sock -device vhost-user-blk-pci,chardev=c0
using Microsoft.Extensions.Logging;
using Vhost.Blk;
using Vhost.Transport;

var path = args.Length > 0 ? args[0] : "/tmp/vhost-blk.sock";
using var loggers = LoggerFactory.Create(b => b.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Information));
using var device = new BlkDevice(new MemoryStorage(128L << 20), queues: 1, loggers.CreateLogger("vhost_blk"));
using var socket = new VhostUserSocket(device.Options(path, client: false, loggers));
socket.Start();
Console.WriteLine($"vhost_blk: 128 MiB RAM disk on {path}; Ctrl-C to stop");
using var done = new ManualResetEventSlim();
Console.CancelKeyPress += (_, e) => { e.Cancel = true; done.Set(); };
done.Wait();
Console.WriteLine($"requests {device.Stats.Requests}, read {device.Stats.BytesRead} B, written {device.Stats.BytesWritten} B");
