using CsCheck;
using Ledger.Contract;
using Ledger.Runs;
using Ledger.Tests.Fixtures;

namespace Ledger.Tests.Runs;

/// <summary>
/// Verdicts under random mixes of worker events, cancels, janitor expiries and operator
/// reclassifications, each decided by <see cref="RunDecider"/> on the state the previous decision
/// left (<see cref="DecidedStream"/>): the ledger decides a run's fate once (invariant 7), terminal
/// is absorbing for everything but an operator (invariant 1), succeeded always means complete
/// (invariant 2), and each new verdict is published once, after the events that reached it.
/// </summary>
public sealed class VerdictPropertyTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private const int LeaseSeconds = 30;

    private enum Move { Complete, ScoreOne, ScoreTwo, Fail, Log, Cancel, Expire, ReclassifyFailed, ReclassifyLost, ReclassifySucceeded }

    private static readonly Gen<(Move Move, bool Retry)[]> Moves =
        Gen.Select(Gen.Enum<Move>(), Gen.Int[0, 4].Select(i => i == 0)).Array[1, 14];

    private static RunRegistered Registered() => TestEvents.Registered("r", T0, LeaseSeconds, scores: ["s"]);

    private static RunClaimed Claimed() => new("w", DeciderKit.TokenHash, T0, T0.AddSeconds(LeaseSeconds));

    [Fact]
    public void the_ledger_decides_once_and_only_an_operator_changes_a_verdict()
    {
        Moves.Sample(moves =>
        {
            var initial = Run.Create(Registered());
            initial.Apply(Claimed());
            initial.Version = 2;
            var stream = new DecidedStream(initial);
            var appendedIds = new HashSet<string>(StringComparer.Ordinal);
            var lastEventId = "none";
            // The moves come a second apart, well within the lease; the janitor comes when the lease has run out.
            var clock = T0;

            for (var i = 0; i < moves.Length; i++)
            {
                var run = stream.State!;
                clock = clock.AddSeconds(1);
                var (move, retry) = moves[i];
                var eventId = retry ? lastEventId : $"e{i}";
                lastEventId = eventId;
                var wasTerminal = run.Status.IsTerminal();
                var before = (run.Status, run.Reason, Verdicts: run.Verdicts.Count);
                var complete = run.CompletionReported && run.Scores.ContainsKey("s");

                var stamp = new Stamp(eventId, clock, clock);
                WorkerEvent? worker = move switch
                {
                    Move.Complete => TestEvents.Completed(stamp),
                    Move.ScoreOne => TestEvents.Scores(stamp, ("s", 1)),
                    Move.ScoreTwo => TestEvents.Scores(stamp, ("s", 2)),
                    Move.Fail => TestEvents.Failed(stamp, "timeout"),
                    Move.Log => TestEvents.Log(stamp, "x"),
                    _ => null,
                };
                if (move == Move.Expire && run.LeaseExpiresAt is { } expires && expires > clock) clock = expires;
                RunCommand command = move switch
                {
                    _ when worker is not null => new RecordEventsCommand("r", DeciderKit.TokenHash, [worker]),
                    Move.Cancel => new CancelCommand("r", "operator"),
                    Move.Expire => new ExpireLeaseCommand("r", TimeSpan.Zero),
                    Move.ReclassifyFailed => Reclassify(RunStatus.Failed),
                    Move.ReclassifyLost => Reclassify(RunStatus.Lost),
                    _ => Reclassify(RunStatus.Succeeded),
                };

                var decision = stream.Decide(command, clock);
                run = stream.State!;
                var where = $"move {i} ({move}{(retry ? ", retried" : "")}) on a {before.Status} run";

                // What each command may do, from the state before it.
                switch (command)
                {
                    case RecordEventsCommand when appendedIds.Contains(eventId):
                        Assert.Empty(decision.Events);
                        Assert.Equal(EventResultKind.Duplicate, Assert.Single(DeciderKit.ResultsOf(decision)!).Result);
                        break;
                    case CancelCommand:
                        Assert.True(wasTerminal == (decision.Refusal?.Code == ProblemCodes.RunTerminal), $"{where}: {decision.Refusal?.Code}");
                        if (!wasTerminal) Assert.Equal(RunStatus.Cancelled, run.Status);
                        break;
                    case ExpireLeaseCommand:
                        Assert.True(wasTerminal != decision.Events.OfType<LeaseExpired>().Any(), $"{where}: the janitor appended {decision.Events.Count}");
                        if (!wasTerminal) Assert.Equal(run.CompletionReported ? RunStatus.Failed : RunStatus.Lost, run.Status);
                        break;
                    case ReclassifyCommand r:
                        var refusal = !wasTerminal ? ProblemCodes.RunNotTerminal
                            : before.Status == r.Status ? ProblemCodes.ReclassifyNoChange
                            : r.Status == RunStatus.Succeeded && !complete ? ProblemCodes.IncompleteResults
                            : null;
                        Assert.True(refusal == decision.Refusal?.Code, $"{where}: to {r.Status} answered {decision.Refusal?.Code ?? "ok"}, expected {refusal ?? "ok"}");
                        if (refusal is null)
                        {
                            Assert.Equal(r.Status, run.Status);
                            Assert.Equal([typeof(RunReclassified), typeof(VerdictReached)], decision.Events.Select(e => e.GetType()));
                        }
                        break;
                }
                foreach (var e in decision.Events.OfType<WorkerEvent>()) Assert.True(appendedIds.Add(e.EventId), $"{where}: {e.EventId} appended twice");

                if (wasTerminal && command is not ReclassifyCommand)
                {
                    Assert.Equal(before, (run.Status, run.Reason, run.Verdicts.Count));
                }
                // Exactly one ledger verdict once the run is terminal (only a terminal run can be reclassified), none before.
                Assert.True(run.Verdicts.Count(v => v.DecidedBy == "ledger") == (run.Status.IsTerminal() ? 1 : 0),
                    $"{run.Status} with {run.Verdicts.Count(v => v.DecidedBy == "ledger")} ledger verdicts");
                Assert.Equal(run.Verdicts.Count(v => v.DecidedBy != "ledger"), stream.Appended.Count(a => a is RunReclassified));
                if (run.Status.IsTerminal()) Assert.Equal(run.Status, run.Verdicts[^1].Status);
                if (run.Status == RunStatus.Succeeded)
                {
                    Assert.True(run.CompletionReported && run.Scores.ContainsKey("s"), "succeeded without its completion and score");
                }

                // Each new verdict is published once, as the last event of the decision that reached it.
                if (run.Verdicts.Count > before.Verdicts)
                {
                    var published = Assert.IsType<VerdictReached>(decision.Events[^1]);
                    Assert.Equal((run.Status, run.Reason, run.Verdicts[^1].DecidedBy, run.Verdicts[^1].At),
                        (published.Status, published.Reason, published.DecidedBy, published.At));
                }
                Assert.Equal(run.Verdicts.Count, stream.Appended.Count(a => a is VerdictReached));
            }

            // Replay is exact: the appended events alone rebuild the same state.
            var replayed = Run.Create(Registered());
            replayed.Apply(Claimed());
            foreach (var e in stream.Appended) replayed.Fold(e);
            replayed.Version = 2 + stream.Appended.Count;
            Assert.Equal(DeciderKit.Json(stream.State), DeciderKit.Json(replayed));
        }, iter: 2000, print: moves => string.Join(", ", moves.Select(m => m.Retry ? $"{m.Move} (retry)" : $"{m.Move}")));
    }

    private static ReclassifyCommand Reclassify(RunStatus to) => new("r", to, "review", ["evidence"], "op");
}
