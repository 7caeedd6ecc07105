using System.Text;
using Ledger.Infrastructure;
using Ledger.Runs;
using Wolverine.Runtime.Handlers;

namespace Ledger.Tests.Infrastructure;

/// <summary>
/// Wolverine's adapters are generated ahead of time and committed (src/Ledger/Internal/Generated):
/// what is committed is what the codegen command writes now, it is written without a database,
/// the service is built without the compiler, and a start on stale code names the command.
/// </summary>
public sealed class GeneratedCodeTests
{
    [Fact]
    public void the_committed_code_is_what_codegen_writes_now_and_writing_it_needs_no_database()
    {
        var scratch = Directory.CreateTempSubdirectory("ledger-codegen-").FullName;
        var noCluster = Path.Combine("/var/tmp", "run-ledger", $"codegen-test-{Guid.NewGuid():N}");
        try
        {
            // Production, no keys, no connection string: the service itself would refuse, and would
            // otherwise start a private PostgreSQL in noCluster. Generating needs none of it.
            var result = LedgerProcess.Run(new()
            {
                ["ASPNETCORE_ENVIRONMENT"] = "Production",
                ["Ledger__EmbeddedPostgres__DataDirectory"] = noCluster,
                ["Ledger__EmbeddedPostgres__Port"] = PrivateCluster.ClosedPort().ToString(),
                [GeneratedCode.OutputSetting.Replace(":", "__")] = scratch,
            }, ["codegen", "write"]);

            Assert.True(result.ExitCode == 0, result.All);
            Assert.False(Directory.Exists(noCluster), $"codegen provisioned a PostgreSQL:\n{result.All}");
            var committed = Path.Combine(RepositoryRoot(), GeneratedCode.CommittedDirectory);
            var differences = Compare(committed, scratch);
            Assert.True(differences.Count == 0,
                $"{GeneratedCode.CommittedDirectory} is stale ({differences.Count} files differ from what codegen writes now):\n  " +
                string.Join("\n  ", differences) +
                $"\nRegenerate it from the repository root with\n  {GeneratedCode.RegenerateCommand}\nand commit the folder.");
        }
        finally
        {
            Directory.Delete(scratch, recursive: true);
        }
    }

    [Fact]
    public void the_service_is_built_without_the_compiler()
    {
        var deps = File.ReadAllText(Path.ChangeExtension(LedgerProcess.ServiceAssembly(), ".deps.json"));
        foreach (var compiler in new[] { "Microsoft.CodeAnalysis", "JasperFx.RuntimeCompiler", "WolverineFx.RuntimeCompilation" })
        {
            Assert.DoesNotContain(compiler, deps, StringComparison.OrdinalIgnoreCase);
        }
    }

    [Fact]
    public void an_endpoint_class_missing_from_the_generated_registry_is_named()
    {
        var assembly = typeof(GeneratedCode).Assembly;
        var registered = GeneratedCode.RegisteredEndpoints(assembly);
        Assert.NotNull(registered);
        Assert.Contains(typeof(GetRunEndpoint), registered);
        Assert.Empty(GeneratedCode.UnregisteredEndpoints(assembly.GetExportedTypes(), registered));

        var stale = registered.Where(t => t != typeof(GetRunEndpoint)).ToList();
        Assert.Equal([typeof(GetRunEndpoint)], GeneratedCode.UnregisteredEndpoints(assembly.GetExportedTypes(), stale));
    }

    [Fact]
    public void a_start_on_stale_generated_code_is_one_plain_line_naming_the_command()
    {
        // The exception Wolverine throws when an adapter is missing, in its own words: each missing one on a '*' line.
        var missing = new MissingPreBuiltTypesException(
            "Wolverine.Http is running in TypeLoadMode.Static, but 1 expected pre-built HTTP endpoint type(s) could not be loaded " +
            "from the configured ApplicationAssembly 'Ledger':\n  * /api/runs/{id} (GET_api_runs_id)\n\nNo pre-generated Wolverine HTTP types could be found.");
        var (code, message, check) = StartupFailure.Describe(new AggregateException(missing), connectionString: null, embedded: false);

        Assert.Equal(StartupFailure.Other, code);
        Assert.Null(check);
        Assert.DoesNotContain('\n', message);
        Assert.Contains("/api/runs/{id} (GET_api_runs_id)", message);
        Assert.Contains(GeneratedCode.CommittedDirectory, message);
        Assert.EndsWith($"Regenerate it with `{GeneratedCode.RegenerateCommand}`, then build again.", message);
    }

    /// <summary>Files only on one side, and files whose text differs (with the first differing line).</summary>
    private static List<string> Compare(string committed, string regenerated)
    {
        static Dictionary<string, string> Read(string root) => Directory.Exists(root)
            ? Directory.EnumerateFiles(root, "*.cs", SearchOption.AllDirectories)
                .ToDictionary(f => Path.GetRelativePath(root, f), f => File.ReadAllText(f, Encoding.UTF8).ReplaceLineEndings("\n"))
            : [];

        var (before, after) = (Read(committed), Read(regenerated));
        var differences = new List<string>();
        foreach (var file in before.Keys.Union(after.Keys).Order(StringComparer.Ordinal))
        {
            if (!after.TryGetValue(file, out var now)) differences.Add($"{file}: committed, but no longer generated");
            else if (!before.TryGetValue(file, out var then)) differences.Add($"{file}: generated, but not committed");
            else if (then != now)
            {
                var (a, b) = (then.Split('\n'), now.Split('\n'));
                var line = Enumerable.Range(0, Math.Max(a.Length, b.Length)).First(i => i >= a.Length || i >= b.Length || a[i] != b[i]);
                differences.Add($"{file}: differs from line {line + 1}: committed `{Line(a, line)}`, generated `{Line(b, line)}`");
            }
        }
        return differences;
    }

    private static string Line(string[] lines, int index) => index < lines.Length ? lines[index].Trim() : "(end of file)";

    private static string RepositoryRoot() =>
        Path.GetFullPath(Path.Combine(Path.GetDirectoryName(LedgerProcess.ServiceAssembly())!, "..", "..", "..", "..", ".."));
}
