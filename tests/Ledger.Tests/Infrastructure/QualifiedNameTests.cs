using System.Text.RegularExpressions;
using Ledger.Infrastructure;
using Ledger.Tests.Contract;

namespace Ledger.Tests.Infrastructure;

/// <summary>
/// Raw SQL names a table or function of the schema only through <see cref="StorageNames"/>: a
/// statement that writes <c>{schema}.{table}</c> itself (or names one of Marten's tables by hand)
/// would keep its old name when the mapping changes, and <see cref="StorageNamesTests"/> would not see it.
/// </summary>
public sealed class QualifiedNameTests
{
    // An interpolation hole that holds a schema's name, followed by a dot: {schema}.x, {_schema}.x, {names.Schema}.x.
    private static readonly Regex SchemaHole = new(@"\{[^{}""]*[sS]chema[^{}""]*\}\.", RegexOptions.Compiled);
    // A schema's name joined to a name with a dot by concatenation or string.Join/Concat.
    private static readonly Regex SchemaJoin = new(@"[sS]chema\w*\s*\+\s*""\.|""\.""\s*\+\s*\w*[tT]able|string\.(Join|Concat)\(""\."",\s*\w*[sS]chema", RegexOptions.Compiled);
    // One of Marten's own tables (mt_streams, mt_events, mt_doc_run, ...) qualified by hand.
    private static readonly Regex MartenTable = new(@"[\w}]\.mt_\w+", RegexOptions.Compiled);

    [Fact]
    public void no_source_file_but_storage_names_qualifies_a_name_by_hand()
    {
        var offenders = Offenders(Path.Combine(ContractTools.RepoRoot, "src", "Ledger"));
        Assert.True(offenders.Count == 0,
            "These lines qualify a table or function name themselves; take it from StorageNames (Own, Table<T>, Events, Streams, Function, or Qualified):\n  "
            + string.Join("\n  ", offenders));
    }

    [Fact]
    public void no_benchmark_file_qualifies_a_name_by_hand()
    {
        // The bench reads the service's tables with its own store configuration's names, so a renamed table moves it too.
        var offenders = Offenders(Path.Combine(ContractTools.RepoRoot, "bench", "Ledger.Bench"));
        Assert.True(offenders.Count == 0,
            "These lines of the bench qualify a table or function name themselves; take it from StorageNames:\n  " + string.Join("\n  ", offenders));
    }

    [Fact]
    public void the_scan_finds_a_name_qualified_by_hand()
    {
        // The scan itself can fail: each of these is how a name used to be (or could be) written by hand.
        string[] handWritten =
        [
            "insert into {schema}.{TableName} (run_id, key, count)",
            "var table = $\"{_schema}.{TableName}\";",
            "select 1 from {names.Schema}.ledger_standings",
            "select version into stored from {schema}.mt_streams where id = ids[i]",
            "var table = schema + \".\" + TableName;",
            "select count(*) from ledger.mt_events",
        ];
        Assert.All(handWritten, line => Assert.True(IsHandQualified(line), $"the scan misses: {line}"));
        Assert.False(IsHandQualified("insert into {StorageNames.Qualified(schema, TableName)} (run_id, key, count)"));
        Assert.False(IsHandQualified("select version into stored from {names.Streams} where id = ids[i]"));
    }

    [Fact]
    public void qualified_names_are_the_ones_storage_names_gives()
    {
        Assert.Equal("ledger.ledger_kpi_counters", StorageNames.Qualified("ledger", "ledger_kpi_counters"));
    }

    private static List<string> Offenders(string root)
    {
        var offenders = new List<string>();
        var files = Directory.EnumerateFiles(root, "*.cs", SearchOption.AllDirectories)
            .Concat(Directory.EnumerateFiles(root, "*.razor", SearchOption.AllDirectories))
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                        && !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                        && !f.Contains($"Internal{Path.DirectorySeparatorChar}Generated", StringComparison.Ordinal)
                        && Path.GetFileName(f) != "StorageNames.cs");
        foreach (var file in files)
        {
            var lines = File.ReadAllLines(file);
            for (var i = 0; i < lines.Length; i++)
            {
                if (IsHandQualified(lines[i])) offenders.Add($"{Path.GetRelativePath(root, file)}:{i + 1}: {lines[i].Trim()}");
            }
        }
        return offenders;
    }

    private static bool IsHandQualified(string line)
    {
        var code = line.TrimStart();
        if (code.StartsWith("//", StringComparison.Ordinal)) return false; // a comment may mention a name
        return SchemaHole.IsMatch(line) || SchemaJoin.IsMatch(line) || MartenTable.IsMatch(line);
    }
}
