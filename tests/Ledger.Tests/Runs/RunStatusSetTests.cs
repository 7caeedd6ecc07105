using System.Text.RegularExpressions;
using Ledger.Contract;
using Ledger.Tests.Contract;

namespace Ledger.Tests.Runs;

/// <summary>
/// "Terminal" and "live" are each one set (<see cref="RunStatusSets"/>): the janitor, the stuck
/// filter, the KPIs, the API description and the console take them from there, never spell them again.
/// </summary>
public sealed class RunStatusSetTests
{
    // A status named in code: RunStatus.Lost, or its wire name as a literal ("lost").
    private static readonly Regex Status = new(
        @"RunStatus\.(Registered|Claimed|Running|Succeeded|Failed|Lost|Cancelled)\b|""(registered|claimed|running|succeeded|failed|lost|cancelled)""",
        RegexOptions.Compiled);

    /// <summary>Lines that name every verdict one by one because a wire record has one member per verdict: a mapping, not a set.</summary>
    private static readonly (string File, string Line)[] Mappings =
    [
        ("Forensics/GetKpiSeries.cs", "new KpiBucket("),
        ("Web/Pages/KpisPage.razor", "@Chart(\"chart-verdicts\""),
        ("Runs/Janitor.cs", "Janitor sweep: {Lost} lost, {Failed} failed"),
    ];

    [Fact]
    public void terminal_is_the_four_verdicts_and_live_is_claimed_or_running()
    {
        // PRODUCT.md: registered -> claimed -> running -> succeeded | failed | lost | cancelled; the last four are terminal.
        Assert.Equal([RunStatus.Succeeded, RunStatus.Failed, RunStatus.Lost, RunStatus.Cancelled], RunStatusSets.Terminal);
        Assert.Equal([RunStatus.Claimed, RunStatus.Running], RunStatusSets.Live);
        foreach (var status in Enum.GetValues<RunStatus>())
        {
            Assert.Equal(RunStatusSets.Terminal.Contains(status), status.IsTerminal());
            Assert.Equal(RunStatusSets.Live.Contains(status), status.IsLive());
        }
    }

    [Fact]
    public void no_source_file_spells_a_set_of_statuses_by_hand()
    {
        var root = Path.Combine(ContractTools.RepoRoot, "src", "Ledger");
        var offenders = new List<string>();
        foreach (var file in Directory.EnumerateFiles(root, "*.cs", SearchOption.AllDirectories)
                     .Concat(Directory.EnumerateFiles(root, "*.razor", SearchOption.AllDirectories)))
        {
            var relative = Path.GetRelativePath(root, file).Replace(Path.DirectorySeparatorChar, '/');
            if (relative.StartsWith("obj/", StringComparison.Ordinal) || relative.StartsWith("bin/", StringComparison.Ordinal)
                || relative.StartsWith("Internal/Generated/", StringComparison.Ordinal)
                || relative == "Contract/RunStatusSets.cs") continue; // the definition itself
            var lines = File.ReadAllLines(file);
            for (var i = 0; i < lines.Length; i++)
            {
                if (!SpellsASet(lines[i])) continue;
                if (Mappings.Any(m => m.File == relative && lines[i].Contains(m.Line, StringComparison.Ordinal))) continue;
                offenders.Add($"{relative}:{i + 1}: {lines[i].Trim()}");
            }
        }
        Assert.True(offenders.Count == 0,
            "These lines spell terminal or live statuses themselves; use RunStatusSets.Terminal / Live (or IsTerminal / IsLive):\n  "
            + string.Join("\n  ", offenders));
    }

    [Fact]
    public void the_scan_finds_a_set_spelled_by_hand()
    {
        string[] handWritten =
        [
            "var terminal = byStatus[\"succeeded\"] + byStatus[\"failed\"] + byStatus[\"lost\"] + byStatus[\"cancelled\"];",
            ".Where(r => (r.Status == RunStatus.Claimed || r.Status == RunStatus.Running) && r.LeaseExpiresAt < cutoff)",
            "@foreach (var s in new[] { RunStatus.Succeeded, RunStatus.Failed, RunStatus.Lost, RunStatus.Cancelled })",
            "@(run.Status is RunStatus.Claimed or RunStatus.Running ? a : b)",
            ".WithMessage(\"The new status must be terminal: succeeded, failed, lost or cancelled.\");",
        ];
        Assert.All(handWritten, line => Assert.True(SpellsASet(line), $"the scan misses: {line}"));
        Assert.False(SpellsASet("if (run.Status == RunStatus.Lost) lost++;"));
        Assert.False(SpellsASet("var terminal = RunStatusSets.Terminal.Sum(s => byStatus[s.Wire()]);"));
        Assert.False(SpellsASet("logger.LogWarning(\"The run failed: {Reason}\", reason);"));
    }

    /// <summary>Two or more verdicts, or both live statuses, on one line.</summary>
    private static bool SpellsASet(string line)
    {
        if (line.TrimStart().StartsWith("//", StringComparison.Ordinal)) return false;
        var named = Status.Matches(line)
            .Select(m => Enum.Parse<RunStatus>(m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Value, ignoreCase: true))
            .ToHashSet();
        // A message that lists the verdicts in words ("must be succeeded, failed, lost or cancelled") spells the set too.
        foreach (Match literal in Literal.Matches(line))
        {
            foreach (Match word in Word.Matches(literal.Value)) named.Add(Enum.Parse<RunStatus>(word.Value, ignoreCase: true));
        }
        return named.Count(s => s.IsTerminal()) >= 2 || named.Count(s => s.IsLive()) == RunStatusSets.Live.Count;
    }

    private static readonly Regex Literal = new(@"""(?:[^""\\]|\\.)*""", RegexOptions.Compiled);
    private static readonly Regex Word = new(@"\b(succeeded|failed|lost|cancelled)\b", RegexOptions.Compiled);
}
