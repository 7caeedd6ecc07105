using System.Text.Json;
using System.Text.Json.Serialization;
using Ledger.Contract;
using Ledger.Labels;

namespace Ledger.Batches;

/// <summary>A run a batch expects: by its id, or by the labels (normalized) it will be registered with.</summary>
public sealed record ExpectedRun(string? RunId = null, IReadOnlyDictionary<string, string>? Labels = null)
{
    /// <summary>The expectation's identity: two expectations with the same key are the same slot.</summary>
    [JsonIgnore]
    public string Key => RunId is not null
        ? "runId:" + RunId
        : "labels:" + JsonSerializer.Serialize(Labels!.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => new[] { kv.Key, kv.Value }));

    public string Describe() => RunId is not null
        ? $"run '{RunId}'"
        : string.Join(", ", Labels!.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}={kv.Value}"));
}

/// <summary>
/// A fan-out job: the runs it expects, fixed when defined. Configuration, not history (like a
/// board); what it holds is derived at read time from the runs registered with its id.
/// </summary>
public sealed class Batch
{
    public string Id { get; set; } = "";
    public string? Title { get; set; }
    public List<ExpectedRun> Expected { get; set; } = [];
    public DateTimeOffset CreatedAt { get; set; }

    public bool SameDefinition(Batch other) =>
        Title == other.Title && Expected.Select(e => e.Key).SequenceEqual(other.Expected.Select(e => e.Key), StringComparer.Ordinal);
}

/// <summary>The part of a run document a batch needs.</summary>
public sealed class BatchMember
{
    public string RunId { get; set; } = "";
    public RunStatus Status { get; set; }
    public Dictionary<string, string> Labels { get; set; } = new();
    public DateTimeOffset RegisteredAt { get; set; }
    public DateTimeOffset? TerminalAt { get; set; }
}

public static class SlotStates
{
    public const string NotRegistered = "not-registered";
    public const string Pending = "pending";
    public const string Overdue = "overdue";
    public const string Terminal = "terminal";
}

/// <summary>
/// Which run fills which expected slot. Pure: the same batch, runs, vocabulary and time give the
/// same answer, whatever order the runs registered in.
/// </summary>
public static class BatchReconciliation
{
    public const string MatchesNoExpectedRun = "matches-no-expected-run";

    /// <param name="members">The runs registered with the batch's id, oldest registration first.</param>
    /// <param name="registeredElsewhere">For expected run ids not in the batch: the batch the run was registered with ("" for none).</param>
    public static BatchView Reconcile(Batch batch, IReadOnlyList<BatchMember> members, LabelVocabulary vocabulary,
        DateTimeOffset now, TimeSpan missingAfter, IReadOnlyDictionary<string, string> registeredElsewhere)
    {
        var slots = batch.Expected.Select(e => new List<BatchMember>()).ToArray();
        var byRunId = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < batch.Expected.Count; i++)
        {
            if (batch.Expected[i].RunId is { } runId) byRunId[runId] = i;
        }
        var shapes = LabelShapes(batch.Expected);

        var unexpected = new List<UnexpectedRun>();
        foreach (var member in members)
        {
            var slot = byRunId.TryGetValue(member.RunId, out var index) ? index : Match(shapes, vocabulary.NormalizeLeniently(member.Labels));
            if (slot is { } s) slots[s].Add(member);
            else unexpected.Add(new UnexpectedRun(member.RunId, member.Status, member.Labels, member.RegisteredAt, MatchesNoExpectedRun));
        }

        var views = new List<BatchSlot>(slots.Length);
        var missing = new List<MissingRun>();
        for (var i = 0; i < slots.Length; i++)
        {
            var expected = batch.Expected[i];
            // A later registration for the same slot is a retry: it supersedes the attempts before it.
            var current = slots[i].Count == 0 ? null : slots[i][^1];
            var run = current is null ? null : SlotRun.Of(current);
            var state = current switch
            {
                null => SlotStates.NotRegistered,
                { Status: var status } when status.IsTerminal() => SlotStates.Terminal,
                _ when now - current.RegisteredAt >= missingAfter => SlotStates.Overdue,
                _ => SlotStates.Pending,
            };
            views.Add(new BatchSlot(expected, state, run, slots[i].Take(slots[i].Count - 1).Select(SlotRun.Of).ToList()));

            if (state == SlotStates.NotRegistered)
            {
                var elsewhere = expected.RunId is { } id && registeredElsewhere.TryGetValue(id, out var other)
                    ? other.Length == 0 ? $" Run '{id}' exists but was registered without a batch." : $" Run '{id}' exists but was registered with batch '{other}'."
                    : "";
                missing.Add(new MissingRun(expected, state, null, $"No run for {expected.Describe()} is registered in this batch.{elsewhere}"));
            }
            else if (state == SlotStates.Overdue)
            {
                missing.Add(new MissingRun(expected, state, run,
                    $"Run '{current!.RunId}' was registered {(now - current.RegisteredAt).TotalSeconds:0}s ago and is still {current.Status.Wire()}; " +
                    $"a verdict was expected within {missingAfter.TotalSeconds:0}s."));
            }
        }

        var counts = Enum.GetValues<RunStatus>().ToDictionary(s => s.Wire(), s => members.Count(m => m.Status == s));
        var terminal = views.Count(v => v.State == SlotStates.Terminal);
        return new BatchView(batch.Id, batch.Title, batch.CreatedAt, now, (int)missingAfter.TotalSeconds,
            Expected: batch.Expected.Count,
            Registered: members.Count,
            Filled: views.Count(v => v.Run is not null),
            Terminal: terminal,
            Complete: batch.Expected.Count > 0 && terminal == batch.Expected.Count,
            counts, missing, unexpected, views);
    }

    /// <summary>Label expectations grouped by the keys they name, the most specific first.</summary>
    private sealed record Shape(string[] Keys, Dictionary<string, int> SlotByValues);

    private static List<Shape> LabelShapes(IReadOnlyList<ExpectedRun> expected)
    {
        var shapes = new Dictionary<string, (string[] Keys, Dictionary<string, int> Slots, int First)>(StringComparer.Ordinal);
        for (var i = 0; i < expected.Count; i++)
        {
            if (expected[i].Labels is not { } labels) continue;
            var keys = labels.Keys.Order(StringComparer.Ordinal).ToArray();
            var shapeKey = JsonSerializer.Serialize(keys);
            if (!shapes.TryGetValue(shapeKey, out var shape)) shapes[shapeKey] = shape = (keys, new Dictionary<string, int>(StringComparer.Ordinal), i);
            shape.Slots.TryAdd(ValuesOf(labels, keys), i);
        }
        return shapes.Values.OrderByDescending(s => s.Keys.Length).ThenBy(s => s.First).Select(s => new Shape(s.Keys, s.Slots)).ToList();
    }

    /// <summary>A run fills the most specific expectation whose every label it carries; other labels of the run do not matter.</summary>
    private static int? Match(List<Shape> shapes, IReadOnlyDictionary<string, string> labels)
    {
        foreach (var shape in shapes)
        {
            if (!shape.Keys.All(labels.ContainsKey)) continue;
            if (shape.SlotByValues.TryGetValue(ValuesOf(labels, shape.Keys), out var slot)) return slot;
        }
        return null;
    }

    private static string ValuesOf(IReadOnlyDictionary<string, string> labels, string[] keys) =>
        JsonSerializer.Serialize(keys.Select(k => labels[k]));
}
