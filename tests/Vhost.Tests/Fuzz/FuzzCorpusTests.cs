using Vhost.Fuzz;

namespace Vhost.Tests.Fuzz;

/// <summary>
/// Every fuzz target over its committed corpus, in-process and without AFL: a target lets no exception
/// escape for an input the library handles, so any exception here is a finding (reproduce with
/// `dotnet fuzz/out/bin/Vhost.Fuzz.dll -v TARGET FILE`).
/// </summary>
public sealed class FuzzCorpusTests
{
    public static TheoryData<string> Targets => new(Program.Targets.Keys);

    [Theory]
    [MemberData(nameof(Targets))]
    public void EveryCorpusInputRunsClean(string target)
    {
        var dir = Path.Combine(CorpusRoot(), target);
        var files = Directory.GetFiles(dir);
        Assert.NotEmpty(files);
        var run = Program.Targets[target];
        foreach (var file in files.Order(StringComparer.Ordinal))
        {
            var input = File.ReadAllBytes(file);
            try
            {
                run(input);
            }
            catch (Exception e)
            {
                Assert.Fail($"{target} {Path.GetFileName(file)}: {e}");
            }
        }
    }

    // the corpus is read where it is committed, so a run of run.sh that adds inputs is tested as is
    private static string CorpusRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
        {
            var c = Path.Combine(d.FullName, "fuzz", "corpus");
            if (Directory.Exists(c)) return c;
        }
        throw new DirectoryNotFoundException($"fuzz/corpus above {AppContext.BaseDirectory}");
    }
}
