using System.Text.Json;

namespace Vhost.Interop.Tests;

/// <summary>Runtime settings the `vhost` tool ships with, as the built tool's runtimeconfig.json carries them.</summary>
public sealed class ToolRuntimeConfigTests
{
    [Fact]
    public void ToolRunsWithoutTieredCompilation()
    {
        // Tiering left the pinned forwarding loop at a fraction of its rate for its first seconds
        // (docs/benchmarks.md, fifteenth session); this keeps a csproj edit from bringing that back unnoticed.
        var path = Path.Combine(AppContext.BaseDirectory, "vhost.runtimeconfig.json");
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        var props = doc.RootElement.GetProperty("runtimeOptions").GetProperty("configProperties");
        Assert.True(props.TryGetProperty("System.Runtime.TieredCompilation", out var tiered), "the tool's runtimeconfig sets no TieredCompilation");
        Assert.False(tiered.GetBoolean());
    }
}
