using Ledger.Batches;
using Ledger.Contract;
using Ledger.Labels;

namespace Ledger.Tests.Batches;

/// <summary>Which run fills which slot, without a database.</summary>
public sealed class BatchReconciliationTests
{
    private static readonly DateTimeOffset T0 = new(2025, 10, 14, 23, 34, 38, TimeSpan.Zero);
    private static readonly TimeSpan MissingAfter = TimeSpan.FromMinutes(10);
    private static readonly Dictionary<string, string> NoneElsewhere = new();

    private static readonly LabelVocabulary Regions = new(new LabelRules
    {
        ["region"] = new LabelRule { Aliases = new() { ["eu-west"] = "EU" }, Allowed = ["EU", "US"] },
    });

    private static Batch Expecting(params ExpectedRun[] expected) => new() { Id = "job-20", Expected = [.. expected], CreatedAt = T0 };

    private static ExpectedRun Labels(params (string Key, string Value)[] labels) => new(Labels: labels.ToDictionary(l => l.Key, l => l.Value));

    private static BatchMember Member(string runId, RunStatus status, DateTimeOffset registeredAt, params (string Key, string Value)[] labels) => new()
    {
        RunId = runId, Status = status, RegisteredAt = registeredAt, Labels = labels.ToDictionary(l => l.Key, l => l.Value),
        TerminalAt = status.IsTerminal() ? registeredAt.AddSeconds(45) : null,
    };

    [Fact]
    public void a_run_fills_the_most_specific_expectation_whose_labels_it_carries()
    {
        var batch = Expecting(Labels(("model", "a")), Labels(("model", "a"), ("region", "EU")));
        var members = new[]
        {
            Member("eu", RunStatus.Succeeded, T0, ("model", "a"), ("region", "EU"), ("host", "gpu-1")),
            Member("us", RunStatus.Succeeded, T0.AddSeconds(1), ("model", "a"), ("region", "US")),
        };

        var view = BatchReconciliation.Reconcile(batch, members, Regions, T0, MissingAfter, NoneElsewhere);

        Assert.Equal(["us", "eu"], view.Slots.Select(s => s.Run!.RunId));
        Assert.True(view.Complete);
    }

    [Fact]
    public void run_labels_are_normalized_again_when_read_so_an_alias_added_later_still_matches()
    {
        var batch = Expecting(Labels(("region", "EU")));
        var registeredBeforeTheAlias = Member("old", RunStatus.Running, T0, ("region", "eu-west"));

        var view = BatchReconciliation.Reconcile(batch, [registeredBeforeTheAlias], Regions, T0, MissingAfter, NoneElsewhere);

        Assert.Equal("old", Assert.Single(view.Slots).Run!.RunId);
        Assert.Empty(view.Unexpected);
    }

    [Fact]
    public void a_registered_run_is_missing_from_exactly_the_configured_time_after_its_registration()
    {
        var batch = Expecting(new ExpectedRun(RunId: "r1"));
        var members = new[] { Member("r1", RunStatus.Running, T0) };

        var before = BatchReconciliation.Reconcile(batch, members, Regions, T0 + MissingAfter - TimeSpan.FromTicks(1), MissingAfter, NoneElsewhere);
        var at = BatchReconciliation.Reconcile(batch, members, Regions, T0 + MissingAfter, MissingAfter, NoneElsewhere);

        Assert.Equal(SlotStates.Pending, Assert.Single(before.Slots).State);
        Assert.Empty(before.Missing);
        Assert.Equal(SlotStates.Overdue, Assert.Single(at.Missing).Reason);
    }

    [Fact]
    public void a_terminal_run_is_never_missing_and_counts_cover_every_registered_run()
    {
        var batch = Expecting(new ExpectedRun(RunId: "r1"));
        var members = new[] { Member("r1", RunStatus.Failed, T0), Member("stray", RunStatus.Registered, T0) };

        var view = BatchReconciliation.Reconcile(batch, members, Regions, T0.AddDays(1), MissingAfter, NoneElsewhere);

        Assert.True(view.Complete);
        Assert.Empty(view.Missing);
        Assert.Equal((1, 1), (view.Counts["failed"], view.Counts["registered"]));
        Assert.Equal("stray", Assert.Single(view.Unexpected).RunId);
    }
}
