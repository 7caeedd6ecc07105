using System.Text.RegularExpressions;
using Ledger.Contract;
using Ledger.Tests.Contract;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;

namespace Ledger.Tests.Infrastructure;

/// <summary>
/// The layers: the problem catalogue and the refusal vocabulary (src/Ledger/Contract) sit below the
/// slices and know nothing of HTTP; the edge (Infrastructure) reaches no run's storage.
/// </summary>
public sealed class LayerTests
{
    private static readonly string Source = Path.Combine(ContractTools.RepoRoot, "src", "Ledger");
    private static readonly string ContractFolder = Path.Combine(Source, "Contract");

    // The implicit usings of a plain (not Web) project: ASP.NET's are not among them.
    private const string BaseUsings =
        "global using System; global using System.Collections.Generic; global using System.IO; global using System.Linq; " +
        "global using System.Net.Http; global using System.Threading; global using System.Threading.Tasks;";

    [Fact]
    public void the_contract_compiles_on_its_own_with_the_base_library_only()
    {
        var errors = CompileAlone(ContractSources());
        Assert.True(errors.Count == 0,
            "src/Ledger/Contract must compile with the base class library alone (no slice, no ASP.NET, no Marten):\n  "
            + string.Join("\n  ", errors));
    }

    [Fact]
    public void a_contract_file_that_reaches_up_does_not_compile_alone()
    {
        // The check above can fail: the same compilation with one file that uses a slice, or HTTP.
        string[] reachingUp =
        [
            "using Ledger.Runs; namespace Ledger.Contract; static class Probe { }",
            "namespace Ledger.Contract; static class Probe { static int Of(HttpContext c) => c.Response.StatusCode; }",
            "namespace Ledger.Contract; static class Probe { static object Of() => typeof(Ledger.Infrastructure.LedgerJson); }",
        ];
        Assert.All(reachingUp, probe => Assert.NotEmpty(CompileAlone([.. ContractSources(), ("Probe.cs", probe)])));
    }

    [Fact]
    public void every_type_of_the_contract_namespace_is_in_the_folder_that_compiles_alone()
    {
        // So the compilation above sees the whole layer: no file elsewhere adds to Ledger.Contract, and no file of the folder leaves it.
        var declared = typeof(ProblemCatalogue).Assembly.GetTypes()
            .Where(t => t.Namespace == "Ledger.Contract" && !t.IsNested && !t.Name.StartsWith('<'))
            .Select(t => t.Name.Split('`')[0]).ToHashSet();
        var tree = CSharpCompilation.Create("Contract", ContractSources().Select(s => CSharpSyntaxTree.ParseText(s.Text)));
        var inFolder = tree.SyntaxTrees
            .SelectMany(t => t.GetRoot().DescendantNodes().OfType<Microsoft.CodeAnalysis.CSharp.Syntax.BaseTypeDeclarationSyntax>()
                .Where(d => d.Parent is not Microsoft.CodeAnalysis.CSharp.Syntax.BaseTypeDeclarationSyntax)
                .Select(d => d.Identifier.Text))
            .Concat(tree.SyntaxTrees.SelectMany(t => t.GetRoot().DescendantNodes().OfType<Microsoft.CodeAnalysis.CSharp.Syntax.DelegateDeclarationSyntax>()
                .Select(d => d.Identifier.Text)))
            .ToHashSet();
        Assert.Contains("ProblemCatalogue", declared);
        Assert.Equal(declared.Order(), inFolder.Order());
        Assert.All(ContractSources(), s => Assert.Contains("namespace Ledger.Contract;", s.Text));
    }

    [Fact]
    public void infrastructure_does_not_reach_into_the_runs_slice()
    {
        var offenders = RunsUsers(Path.Combine(Source, "Infrastructure"));
        Assert.True(offenders.Count == 0,
            "Infrastructure sits below the slices: ask the Runs slice through an interface it implements (IRunLookup), " +
            "or take the words from Ledger.Contract. These lines use Ledger.Runs:\n  " + string.Join("\n  ", offenders));
    }

    [Fact]
    public void the_scan_finds_a_use_of_the_runs_slice()
    {
        Assert.True(UsesRuns("using Ledger.Runs;"));
        Assert.True(UsesRuns("        var run = await query.LoadAsync<Ledger.Runs.Run>(runId, ct);"));
        Assert.True(UsesRuns("using static Ledger.Runs.RunRules;"));
        Assert.False(UsesRuns("using Ledger.Contract;"));
        Assert.False(UsesRuns("/// <summary>The Runs slice answers it (<c>Ledger.Runs.RunLookup</c>).</summary>"));
    }

    private static IReadOnlyList<(string Path, string Text)> ContractSources()
    {
        var files = Directory.GetFiles(ContractFolder, "*.cs", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToArray();
        Assert.NotEmpty(files);
        return files.Select(f => (Path.GetRelativePath(Source, f), File.ReadAllText(f))).ToArray();
    }

    private static List<string> CompileAlone(IEnumerable<(string Path, string Text)> sources)
    {
        var parse = new CSharpParseOptions(LanguageVersion.Preview);
        var trees = sources.Select(s => CSharpSyntaxTree.ParseText(s.Text, parse, s.Path))
            .Append(CSharpSyntaxTree.ParseText(BaseUsings, parse, "BaseUsings.cs"));
        var compilation = CSharpCompilation.Create("ContractAlone", trees, BaseLibrary(),
            new CSharpCompilationOptions(OutputKind.DynamicallyLinkedLibrary, nullableContextOptions: NullableContextOptions.Enable));
        return compilation.GetDiagnostics().Where(d => d.Severity == DiagnosticSeverity.Error).Select(d => d.ToString()).ToList();
    }

    /// <summary>The assemblies of the .NET runtime itself (the folder of System.Private.CoreLib): no ASP.NET, no package.</summary>
    private static IReadOnlyList<MetadataReference> BaseLibrary()
    {
        var runtime = Path.GetDirectoryName(typeof(object).Assembly.Location)!;
        return ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator)
            .Where(path => Path.GetDirectoryName(path) == runtime)
            .Select(path => (MetadataReference)MetadataReference.CreateFromFile(path))
            .ToList();
    }

    private static readonly Regex RunsNamespace = new(@"\bLedger\.Runs\b", RegexOptions.Compiled);

    private static bool UsesRuns(string line) => !line.TrimStart().StartsWith("//", StringComparison.Ordinal) && RunsNamespace.IsMatch(line);

    // The API description (src/Ledger/OpenApi) describes every slice's requests from their own
    // constants: it sits above the slices, as Program.cs does, so it is not scanned.
    private static List<string> RunsUsers(string folder) =>
        Directory.GetFiles(folder, "*.cs", SearchOption.AllDirectories)
            .SelectMany(f => File.ReadLines(f).Select((line, i) => (f, line, i)))
            .Where(x => UsesRuns(x.line))
            .Select(x => $"{Path.GetRelativePath(Source, x.f)}:{x.i + 1}: {x.line.Trim()}")
            .ToList();
}
