using System.Text.Json;
using CsCheck;
using Ledger.Infrastructure;
using Ledger.Runs;

namespace Ledger.Tests.Runs;

/// <summary>
/// Verdicts under random mixes of worker events, cancels, janitor expiries and operator
/// reclassifications, each appended only when its endpoint (or the janitor) would append it:
/// the ledger decides a run's fate once (invariant 7), terminal is absorbing for everything but
/// an operator (invariant 1), and succeeded always means complete (invariant 2).
/// </summary>
public sealed class VerdictPropertyTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private enum Move { Complete, ScoreOne, ScoreTwo, Fail, Log, Cancel, Expire, ReclassifyFailed, ReclassifyLost, ReclassifySucceeded }

    private static readonly Gen<(Move Move, bool Retry)[]> Moves =
        Gen.Select(Gen.Enum<Move>(), Gen.Int[0, 4].Select(i => i == 0)).Array[1, 14];

    [Fact]
    public void the_ledger_decides_once_and_only_an_operator_changes_a_verdict()
    {
        Moves.Sample(moves =>
        {
            var run = Run.Create(new RunRegistered("r", null, null, null, new Dictionary<string, string>(), ["s"], [], null, 30, T0));
            run.Apply(new RunClaimed("w", "hash", T0, T0.AddSeconds(30)));
            var appended = new List<object>();
            var lastEventId = "none";

            for (var i = 0; i < moves.Length; i++)
            {
                var at = T0.AddSeconds(i + 1);
                var (move, retry) = moves[i];
                var eventId = retry ? lastEventId : $"e{i}";
                lastEventId = eventId;
                var wasTerminal = run.Status.IsTerminal();
                var before = (run.Status, run.Reason, Verdicts: run.Verdicts.Count);

                object? e = move switch
                {
                    Move.Complete => new RunCompleted { EventId = eventId, OccurredAt = at, RecordedAt = at },
                    Move.ScoreOne => new ScoresReported { EventId = eventId, OccurredAt = at, RecordedAt = at, Scores = new Dictionary<string, double> { ["s"] = 1 } },
                    Move.ScoreTwo => new ScoresReported { EventId = eventId, OccurredAt = at, RecordedAt = at, Scores = new Dictionary<string, double> { ["s"] = 2 } },
                    Move.Fail => new RunFailed { EventId = eventId, OccurredAt = at, RecordedAt = at, ErrorClass = "timeout" },
                    Move.Log => new LogWritten { EventId = eventId, OccurredAt = at, RecordedAt = at, Lines = ["x"] },
                    // The cancel endpoint and the janitor append only to a live run.
                    Move.Cancel => wasTerminal ? null : new RunCancelled("operator", at),
                    Move.Expire => wasTerminal ? null : new LeaseExpired(at, at),
                    // The reclassify endpoint: terminal, a different status, and success only with its results.
                    Move.ReclassifyFailed => Reclassify(run, RunStatus.Failed, at),
                    Move.ReclassifyLost => Reclassify(run, RunStatus.Lost, at),
                    _ => Reclassify(run, RunStatus.Succeeded, at),
                };
                if (e is null) continue;
                if (e is WorkerEvent worker && run.Evaluate(worker).Kind is EventResultKind.Refused or EventResultKind.Duplicate) continue;

                run.Fold(e);
                appended.Add(e);

                if (wasTerminal && e is not RunReclassified)
                {
                    Assert.Equal(before, (run.Status, run.Reason, run.Verdicts.Count));
                }
                // Exactly one ledger verdict once the run is terminal (only a terminal run can be reclassified), none before.
                Assert.True(run.Verdicts.Count(v => v.DecidedBy == "ledger") == (run.Status.IsTerminal() ? 1 : 0),
                    $"{run.Status} with {run.Verdicts.Count(v => v.DecidedBy == "ledger")} ledger verdicts");
                Assert.Equal(run.Verdicts.Count(v => v.DecidedBy != "ledger"), appended.Count(a => a is RunReclassified));
                if (run.Status.IsTerminal()) Assert.Equal(run.Status, run.Verdicts[^1].Status);
                if (run.Status == RunStatus.Succeeded)
                {
                    Assert.True(run.CompletionReported && run.Scores.ContainsKey("s"), "succeeded without its completion and score");
                }
                if (e is LeaseExpired)
                {
                    Assert.Equal(run.CompletionReported ? RunStatus.Failed : RunStatus.Lost, run.Status);
                }
            }

            // Replay is exact: the appended events alone rebuild the same state.
            var replayed = Run.Create(new RunRegistered("r", null, null, null, new Dictionary<string, string>(), ["s"], [], null, 30, T0));
            replayed.Apply(new RunClaimed("w", "hash", T0, T0.AddSeconds(30)));
            foreach (var e in appended) replayed.Fold(e);
            Assert.Equal(JsonSerializer.Serialize(run, LedgerJson.Options), JsonSerializer.Serialize(replayed, LedgerJson.Options));
        }, iter: 2000);
    }

    private static RunReclassified? Reclassify(Run run, RunStatus to, DateTimeOffset at) =>
        !run.Status.IsTerminal() || run.Status == to || (to == RunStatus.Succeeded && run.MissingForSuccess().Count > 0)
            ? null
            : new RunReclassified(run.Status, run.Reason, to, "review", ["evidence"], "op", at);
}
