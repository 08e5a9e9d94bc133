// The counterpart of DPDK's examples/vhost_blk: a RAM disk (or an image file) served over a vhost-user
// socket until Ctrl-C.  dotnet run --project samples/VhostBlk -- /tmp/vhost.socket [image]
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Vhost.Blk;
using Vhost.Transport;

string path = args.Length > 0 ? args[0] : "vhost.socket";
using var loggers = LoggerFactory.Create(b => b.AddSimpleConsole(o => o.SingleLine = true));
using IBlockStorage disk = args.Length > 1 ? new FileDisk(args[1]) : new MemoryDisk(128L << 20, "vhost-blk-sample");
using var blk = new VirtioBlk(disk, new VirtioBlkOptions { Queues = 1, LoggerFactory = loggers });
using var socket = new VhostUserSocket(blk.CreateSocketOptions(path));
socket.Start();
Console.WriteLine($"serving {disk.Capacity >> 20} MiB on {path}; Ctrl-C to stop");

using var stop = new ManualResetEventSlim();
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Set(); });
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Set(); });
stop.Wait();
socket.Dispose();
var s = blk.TotalStats();
Console.WriteLine($"{s.Reads} reads ({s.ReadBytes} bytes), {s.Writes} writes ({s.WrittenBytes} bytes), {s.Flushes} flushes");
