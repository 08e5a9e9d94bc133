// The counterpart of DPDK's examples/vhost_crypto: one virtio-crypto device per vhost-user socket (DPDK's
// --socket-file), the work done by .NET's cryptography instead of a cryptodev, until Ctrl-C.
//   dotnet run --project samples/VhostCrypto -- /tmp/crypto0.sock [/tmp/crypto1.sock ...]
// QEMU: -chardev socket,id=cc0,path=/tmp/crypto0.sock -object cryptodev-vhost-user,id=cryptodev0,chardev=cc0
//       -device virtio-crypto-pci,cryptodev=cryptodev0
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Vhost.Crypto;
using Vhost.Transport;

string[] paths = args.Length > 0 ? args : ["vhost-crypto.sock"];
using var loggers = LoggerFactory.Create(b => b.AddSimpleConsole(o => o.SingleLine = true));
using var crypto = new VirtioCrypto(new VirtioCryptoOptions { Queues = 1, LoggerFactory = loggers });
var sockets = paths.Select(p => new VhostUserSocket(crypto.CreateSocketOptions(p))).ToList();
foreach (var s in sockets) s.Start();
Console.WriteLine($"serving virtio-crypto on {string.Join(", ", paths)}; Ctrl-C to stop");

using var stop = new ManualResetEventSlim();
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Set(); });
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Set(); });
stop.Wait();
foreach (var s in sockets) s.Dispose();
var t = crypto.TotalStats();
Console.WriteLine($"{t.Requests} requests ({t.Bytes} bytes), {crypto.SessionsCreated} sessions, {t.Failed} refused, {t.NotSupported} unsupported");
