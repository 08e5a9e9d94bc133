using System.Globalization;

namespace Vhost.Interop.Tests.Peers;

/// <summary>What a guest run ended with: the script's status (124: never finished) and the serial console.</summary>
public sealed record GuestResult(int ExitCode, string Console, TimeSpan Elapsed)
{
    public override string ToString() => $"exit {ExitCode} after {Elapsed.TotalSeconds:F1} s\n{Console}";
}

/// <summary>
/// Boots the harness guest under QEMU with the shared guest-run.sh: the script runs inside the guest, the
/// extra QEMU arguments attach devices (vhost-user chardevs). GUEST_TIMEOUT bounds the guest; the wrapper
/// itself is killed a little later, and on Dispose.
/// </summary>
public sealed class QemuGuest : PeerProcess
{
    private QemuGuest(string script, IReadOnlyList<string> qemuArgs, PeerTempDir dir, TimeSpan timeout, string guestDir, string? append)
        : base("bash", [SharedHarness.Script("guest-run.sh"), guestDir, script, .. qemuArgs],
            dir.File("qemu-" + Guid.NewGuid().ToString("N")[..6] + ".log"), timeout + TimeSpan.FromSeconds(20),
            new Dictionary<string, string>
            {
                ["GUEST_TIMEOUT"] = ((int)timeout.TotalSeconds).ToString(CultureInfo.InvariantCulture),
                ["GUEST_LOG"] = dir.File("console-" + Guid.NewGuid().ToString("N")[..6] + ".log"),
                ["GUEST_APPEND"] = append ?? "",
            })
    {
        Completion = Exited.ContinueWith(t => new GuestResult(t.Result, Output, DateTime.UtcNow - StartedAt), TaskScheduler.Default);
    }

    /// <summary>Completes when the guest powered off or timed out.</summary>
    public Task<GuestResult> Completion { get; }

    /// <summary>Starts the guest (building it first if needed) and returns at once.</summary>
    public static QemuGuest Start(string script, IEnumerable<string> qemuArgs, PeerTempDir dir, TimeSpan? timeout = null, string? append = null,
        string? guestDir = null) =>
        new(script, [.. qemuArgs], dir, timeout ?? TimeSpan.FromSeconds(120), guestDir ?? SharedHarness.GuestDir(), append);

    /// <summary>Runs a guest to the end: <c>guest-run.sh GUESTDIR SCRIPT ARGS...</c>; <paramref name="append"/> adds kernel
    /// arguments, <paramref name="guestDir"/> names another guest than the shared one.</summary>
    public static async Task<GuestResult> RunAsync(string script, IEnumerable<string> qemuArgs, PeerTempDir dir, TimeSpan? timeout = null,
        string? append = null, string? guestDir = null)
    {
        using var g = Start(script, qemuArgs, dir, timeout, append, guestDir);
        return await g.Completion.ConfigureAwait(false);
    }

    /// <summary>A q35 machine with an emulated Intel IOMMU and a PCIe root port "rp0" for the device behind it (add
    /// <c>bus=rp0,iommu_platform=on,ats=on</c> to the device; ats is ignored off a root port).</summary>
    public static readonly string[] ViommuMachineArgs =
        ["-M", "q35", "-device", "intel-iommu,intremap=on,device-iotlb=on", "-device", "pcie-root-port,id=rp0,slot=1"];

    /// <summary>Kernel arguments for a guest that uses the vIOMMU in strict mode (every unmap flushed at once).</summary>
    public const string ViommuStrictAppend = "intel_iommu=on iommu.strict=1";

    /// <summary>QEMU arguments for a vhost-user-net device on <paramref name="socket"/> (vectors=0: QEMU 7.2
    /// under TCG crashes with MSI-X on vhost-user-net; romfile= skips iPXE).</summary>
    public static string[] NetDeviceArgs(string socket, string mac = "52:54:00:12:34:56") =>
        ["-chardev", $"socket,id=c1,path={socket}", "-netdev", "vhost-user,id=n0,chardev=c1",
         "-device", $"virtio-net-pci,netdev=n0,romfile=,vectors=0,mac={mac}"];

    /// <summary>QEMU arguments for a vhost-user-blk device on <paramref name="socket"/>.</summary>
    public static string[] BlkDeviceArgs(string socket, int queues = 1) =>
        ["-chardev", $"socket,id=c0,path={socket}", "-device",
         string.Create(CultureInfo.InvariantCulture, $"vhost-user-blk-pci,chardev=c0,num-queues={queues}")];
}
