using System.Text.Json;
using Ledger.Contract;
using Ledger.Infrastructure;
using Ledger.Runs;
using Microsoft.Extensions.Options;

namespace Ledger.Tests.Runs;

/// <summary>
/// What the pure tests of the run share: a lease token with the digest a claim keeps of it, the
/// writer's lookup of recorded keys, and JSON to compare states and decisions by.
/// </summary>
internal static class DeciderKit
{
    /// <summary>The worker's lease token; a claim keeps only its hex SHA-256 digest, and the edge sends that digest with the events.</summary>
    public const string Token = "lt_the-workers-lease-token";
    public static readonly string TokenHash = Access.DigestHex(Token);

    /// <summary>A token this ledger issued for another lease (an earlier claim, or another worker's).</summary>
    public const string OtherToken = "lt_another-lease-token";
    public static readonly string OtherTokenHash = Access.DigestHex(OtherToken);

    public static readonly LeaseTokenDerivation Derivation =
        new(Options.Create(new LedgerOptions { AdminKey = "admin-key-of-the-pure-tests" }));

    /// <summary>
    /// What the writer's lookup finds for a command: those of the command's eventIds and chunk ids
    /// the run already recorded, and no others (it queries only the keys the command carries).
    /// </summary>
    public static RecordedKeys Lookup(RecordedKeys recorded, RecordEventsCommand command)
    {
        var ids = command.Events.Select(e => e.EventId).Where(recorded.EventIds.Contains).ToHashSet(StringComparer.Ordinal);
        var chunks = command.Events.OfType<ItemsCommitted>().Select(i => i.ChunkId).Distinct(StringComparer.Ordinal)
            .Where(recorded.Chunks.ContainsKey).ToDictionary(c => c, c => recorded.Chunks[c], StringComparer.Ordinal);
        return new RecordedKeys(ids, chunks);
    }

    public static string Json(object? value) => JsonSerializer.Serialize(value, LedgerJson.Options);

    /// <summary>A decision as one text: its events (by their runtime types), its answer and the state after it.</summary>
    public static string Json(Decision decision) =>
        JsonSerializer.Serialize(new { Events = decision.Events.Select(e => new { Type = e.GetType().Name, Event = e }), Outcome = Shown(decision.Outcome), decision.After },
            LedgerJson.Options);

    /// <summary>An outcome with its answer serialized as what it is (the record declares only the answer's interface).</summary>
    private static object Shown(Outcome outcome) => outcome is Outcome.Accepted accepted ? new { Accepted = (object)accepted.Value } : outcome;

    /// <summary>What became of each event of a events decision, whether it was accepted or late.</summary>
    public static IReadOnlyList<EventResult>? ResultsOf(Decision decision) => decision.Results;
}

/// <summary>
/// One run's stream decided the way <see cref="RunWriter"/> decides it, without a database: each
/// command on the state the previous one left, with the keys the appended events recorded
/// (<see cref="RecordedKeys.With"/>). Every decision is checked for what any decision must do:
/// it leaves the state it was given unchanged, a refusal appends nothing, a decision that
/// appends nothing leaves the state as it was, and the version counts the appended events.
/// </summary>
internal sealed class DecidedStream(Run? state)
{
    public Run? State { get; private set; } = state;

    /// <summary>Everything appended by the decisions, in order.</summary>
    public List<object> Appended { get; } = [];

    /// <summary>The eventIds and chunk ids the appended events recorded, as the writer's table holds them.</summary>
    public RecordedKeys Keys { get; private set; } = RecordedKeys.None;

    public Decision Decide(RunCommand command, DateTimeOffset now)
    {
        if (command is RecordEventsCommand record) command = record with { Recorded = DeciderKit.Lookup(Keys, record) };

        var before = DeciderKit.Json(State);
        var decision = RunDecider.Decide(State, command, now);

        Assert.True(before == DeciderKit.Json(State), $"deciding {command.GetType().Name} changed the state it was given");
        if (decision.Refusal is { } refusal) Assert.True(decision.Events.Count == 0, $"a refusal ({refusal.Code}) appended events");
        if (decision.Events.Count == 0)
        {
            Assert.True(before == DeciderKit.Json(decision.After), $"{command.GetType().Name} appended nothing but changed the state");
        }
        else
        {
            Assert.Equal(State!.Version + decision.Events.Count, decision.After!.Version);
        }

        Appended.AddRange(decision.Events);
        Keys = Keys.With(decision.Events);
        State = decision.After;
        return decision;
    }
}
