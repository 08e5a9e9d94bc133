using System.Diagnostics;

namespace Vhost.Tests.Interop;

/// <summary>Assembles a listing with GNU as and objcopy (binutils; test.sh installs them) into the bytes of its .text.</summary>
internal static class GnuAssembler
{
    public static byte[] Assemble(string listing)
    {
        var dir = Directory.CreateTempSubdirectory("vhost-as-");
        try
        {
            string src = Path.Combine(dir.FullName, "code.S"), obj = Path.Combine(dir.FullName, "code.o"), bin = Path.Combine(dir.FullName, "code.bin");
            File.WriteAllText(src, listing + "\n");
            Run("as", $"-o {obj} {src}");
            Run("objcopy", $"-O binary -j .text {obj} {bin}");
            return File.ReadAllBytes(bin);
        }
        finally
        {
            dir.Delete(true);
        }
    }

    private static void Run(string tool, string args)
    {
        using var p = Process.Start(new ProcessStartInfo(tool, args) { RedirectStandardError = true })!;
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{tool} {args}: {err}");
    }
}
