using System.Text.RegularExpressions;
using Ledger.Runs;
using Ledger.Tests.Contract;

namespace Ledger.Tests.Fixtures;

/// <summary>The run's registration and its worker events are built in one place (<see cref="TestEvents"/>), not by hand in each test.</summary>
public sealed class EventBuilderTests
{
    private static readonly string Tests = Path.Combine(ContractTools.RepoRoot, "tests", "Ledger.Tests");

    /// <summary>
    /// The two random stream generators build events by hand: they set members the builders leave
    /// out (a digest, warnings, names), and the order of their random draws is pinned by the fold
    /// revision's digest (<c>RunSnapshotTests.the_fold_revision_names_the_fold</c>).
    /// </summary>
    private static readonly string[] Generators = ["Runs/RunPropertyTests.cs", "Runs/RunSnapshotTests.cs"];

    private static readonly Regex ByHand = new(
        @"\bnew\s+(" + string.Join("|", WorkerEventCatalogue.Default.Types.Select(t => t.Event.Name).Append(nameof(RunRegistered))) + @")\s*[({]",
        RegexOptions.Compiled);

    [Fact]
    public void no_test_builds_a_registration_or_a_worker_event_by_hand()
    {
        var offenders = new List<string>();
        foreach (var file in Directory.EnumerateFiles(Tests, "*.cs", SearchOption.AllDirectories))
        {
            var relative = Path.GetRelativePath(Tests, file).Replace(Path.DirectorySeparatorChar, '/');
            if (relative.StartsWith("bin/", StringComparison.Ordinal) || relative.StartsWith("obj/", StringComparison.Ordinal)
                || relative == "Fixtures/TestEvents.cs" || relative == "Fixtures/EventBuilderTests.cs" || Generators.Contains(relative)) continue;
            var lines = File.ReadAllLines(file);
            for (var i = 0; i < lines.Length; i++)
            {
                if (ByHand.IsMatch(lines[i])) offenders.Add($"{relative}:{i + 1}: {lines[i].Trim()}");
            }
        }
        Assert.True(offenders.Count == 0, "Build these with TestEvents (Fixtures/TestEvents.cs):\n  " + string.Join("\n  ", offenders));
    }

    [Fact]
    public void the_scan_finds_an_event_built_by_hand()
    {
        Assert.Matches(ByHand, "0 => new RunStarted { EventId = id, OccurredAt = at, RecordedAt = default },");
        Assert.Matches(ByHand, "run = Run.Create(new RunRegistered(RunId, null, \"team\", null, labels, scores, outputs, null, 60, T0));");
        Assert.DoesNotMatch(ByHand, "var claimed = new RunClaimed(\"w\", hash, at, at.AddSeconds(60));");
        Assert.DoesNotMatch(ByHand, "4 => TestEvents.Scores(s, (Pick(\"acc\", \"other\"), Pick(0.5, 0.6))),");
    }
}
