using Ledger.Contract;
using Ledger.Infrastructure;

namespace Ledger.Runs;

/// <summary>
/// The decide half of the run's decider: for each command, a pure function of (the run's state,
/// the command, now) giving the events to append and the answer. No I/O, no clock, no HTTP: the
/// endpoints, the janitor, the console, the tests and the benchmark call these same functions
/// through <see cref="RunWriter"/> (or directly, in tests). The state's own Apply methods stay the
/// guarantee of the invariants; these choose what to append and what to say.
/// </summary>
public static class RunDecider
{
    public static Decision Decide(Run? run, RunCommand command, DateTimeOffset now) => command switch
    {
        RecordEventsCommand c => Record(run, c, now),
        ClaimCommand c => Claim(run, c, now),
        CancelCommand c => Cancel(run, c, now),
        ReclassifyCommand c => Reclassify(run, c, now),
        ObserveCommand c => Observe(run, c, now),
        ExpireLeaseCommand c => ExpireLease(run, c, now),
        _ => throw new ArgumentException($"No decision for {command.GetType().Name}", nameof(command)),
    };

    public static Decision Record(Run? run, RecordEventsCommand command, DateTimeOffset now)
    {
        if (run is null) return Decision.Refuse(NotFound(command.RunId), null);
        if (!Leases.Holds(run, command.TokenHash)) return Decision.Refuse(LeaseLost(run), run);

        var wasTerminal = run.Status.IsTerminal();
        // A terminal run takes late events (recorded and flagged) within the grace; a live one needs a live lease.
        if (!wasTerminal && run.LeaseExpiresAt is { } expires && expires <= now) return Decision.Refuse(LeaseExpired(run), run);
        var late = command.Late;
        if (wasTerminal && run.TerminalAt is { } verdictAt && now >= verdictAt + late.Grace)
        {
            // The token is dead: nothing is recorded, but a completion of a lost run is still flagged (kept with the refusal).
            var ghost = run.Status == RunStatus.Lost && command.Events.Any(e => e is RunCompleted && !command.Recorded.EventIds.Contains(e.EventId));
            return Decision.Refuse(GraceOver(run, late.Grace) with { Flag = ghost ? AnomalyKinds.LateCompletion : null }, run);
        }

        var after = run.Clone();
        var recorded = command.Recorded;
        var idsHere = new HashSet<string>(StringComparer.Ordinal);
        var chunksHere = new Dictionary<string, long>(StringComparer.Ordinal);
        var results = new List<EventResult>(command.Events.Count);
        var toAppend = new List<object>(command.Events.Count + 1);
        long beyondCap = 0;
        var completionBeyondCap = false;
        foreach (var sent in command.Events)
        {
            var e = sent with { RecordedAt = now };
            var effect = EffectOf(after, e, recorded, idsHere, chunksHere);
            if (effect.Kind == EventResultKind.Refused)
            {
                return Decision.Refuse(new Refusal(effect.Reason!,
                    command.Events.Count > 1 ? $"{effect.Detail} No event of this request was recorded." : effect.Detail!,
                    run.Status) { EventId = e.EventId }, run);
            }
            if (effect.Late && after.LateEvents >= late.MaxPerRun)
            {
                // Beyond the cap: not recorded, counted (a repeat within the request is a duplicate, counted once).
                beyondCap++;
                completionBeyondCap |= effect.Reason == AnomalyKinds.LateCompletion;
                idsHere.Add(e.EventId);
                results.Add(new EventResult(e.EventId, EventResultKind.Refused, LateEventsCappedReason,
                    $"The run already recorded {late.MaxPerRun} late events, its cap; this one is counted, not recorded."));
                continue;
            }
            results.Add(new EventResult(e.EventId, effect.Kind, effect.Reason, effect.Detail));
            if (effect.Kind == EventResultKind.Duplicate) continue;
            idsHere.Add(e.EventId);
            if (e is ItemsCommitted chunk) chunksHere.TryAdd(chunk.ChunkId, chunk.Count);
            toAppend.Add(e);
            after.Fold(e);
        }

        if (beyondCap > 0 && after.LateEventsCapAnomaly is null)
        {
            // The first time the cap is passed: the one anomaly that counts every late event beyond it.
            var capped = new LateEventsCapped(late.MaxPerRun, now);
            toAppend.Add(capped);
            after.Fold(capped);
        }

        PublishVerdict(run, after, toAppend);
        after.Version = run.Version + toAppend.Count;
        // Late events of a terminal run are answered as such; a pure retry of what was already recorded is answered as it was: idempotent.
        Outcome outcome = wasTerminal && (toAppend.Count > 0 || beyondCap > 0)
            ? new Outcome.Late(Terminal(run) with { Flag = completionBeyondCap && run.Status == RunStatus.Lost ? AnomalyKinds.LateCompletion : null }, results)
            : new Outcome.Accepted(new EventsRecorded(run.Id, after.Status, results));
        return new Decision(toAppend, outcome, after) { LateEventsBeyondCap = beyondCap };
    }

    /// <summary>The reason a late event beyond the run's cap gets in its result.</summary>
    public const string LateEventsCappedReason = "late-events-capped";

    /// <summary>
    /// What recording one event would do: a repeated eventId or chunk id is a duplicate (or, for a
    /// chunk sent again with another count, a conflict); everything else is what folding it does
    /// (<see cref="Run.EffectOf"/>, by the rules of <see cref="RunRules"/>): refused by a rule, the request is refused.
    /// </summary>
    private static EventEffect EffectOf(Run run, WorkerEvent e, RecordedKeys recorded,
        HashSet<string> idsHere, Dictionary<string, long> chunksHere)
    {
        if (recorded.EventIds.Contains(e.EventId) || idsHere.Contains(e.EventId)) return EventEffect.Duplicate("event-id-seen");
        if (!run.Status.IsTerminal() && e is ItemsCommitted i
            && (recorded.Chunks.TryGetValue(i.ChunkId, out var count) || chunksHere.TryGetValue(i.ChunkId, out count)))
        {
            return count == i.Count
                ? EventEffect.Duplicate("chunk-already-committed")
                : EventEffect.Refuse(ProblemCodes.ChunkConflict,
                    $"Chunk '{i.ChunkId}' was already committed with {count} items, not {i.Count}.");
        }
        return run.EffectOf(e);
    }

    public static Decision Claim(Run? run, ClaimCommand command, DateTimeOffset now)
    {
        if (run is null) return Decision.Refuse(NotFound(command.RunId), null);
        if (run.Status.IsTerminal()) return Decision.Refuse(Terminal(run), run);

        if (run.LeaseExpiresAt is { } expires && expires > now)
        {
            // The same claim again (a retry after a lost answer): the same lease, nothing appended.
            if (SameClaim(run, command) is { } again) return Decision.Accept([], LeaseGranted.For(run, again, expires), run);
            return Decision.Refuse(new Refusal(ProblemCodes.LeaseHeld,
                $"Held by '{run.Worker ?? "an unnamed worker"}' until {expires:O}.", run.Status), run);
        }

        string token;
        string? claimIdHash = null;
        if (command.ClaimId is { } claimId)
        {
            token = command.Derivation.Derive(run.Id, claimId, command.FreshNonce);
            claimIdHash = Access.DigestHex(claimId);
        }
        else
        {
            token = command.FreshToken;
        }
        var claimed = new RunClaimed(command.Worker, Access.DigestHex(token), now, now.AddSeconds(run.LeaseSeconds),
            claimIdHash, claimIdHash is null ? null : command.FreshNonce, claimIdHash is null ? null : command.KeyHash);
        return Appending(run, [claimed], after => LeaseGranted.For(after, token, claimed.LeaseExpiresAt));
    }

    /// <summary>
    /// The live lease's token when this command is the claim that got it: the same claimId (compared
    /// as digests, in constant time) from the same worker with the same key. Null otherwise, and also
    /// when the token can no longer be derived (the server secret changed since): then the claim is
    /// refused as held. A claim recorded before claims were bound to their key is not bound.
    /// </summary>
    private static string? SameClaim(Run run, ClaimCommand command)
    {
        if (command.ClaimId is not { } claimId || run.ClaimIdHash is not { } held || run.TokenNonce is not { } nonce) return null;
        if (!string.Equals(run.Worker, command.Worker, StringComparison.Ordinal)) return null;
        if (run.ClaimKeyHash is { } boundTo
            && (command.KeyHash is null || !Access.Matches(Convert.FromHexString(boundTo), Convert.FromHexString(command.KeyHash)))) return null;
        if (!Access.Matches(Convert.FromHexString(held), Access.Digest(claimId))) return null;
        var token = command.Derivation.Derive(run.Id, claimId, nonce);
        return Leases.Holds(run, Access.DigestHex(token)) ? token : null;
    }

    public static Decision Cancel(Run? run, CancelCommand command, DateTimeOffset now)
    {
        if (run is null) return Decision.Refuse(NotFound(command.RunId), null);
        if (run.Status.IsTerminal()) return Decision.Refuse(Terminal(run), run);
        return Appending(run, [new RunCancelled(command.Reason, now)],
            after => new RunCancelledResponse(run.Id, after.Status, after.Reason));
    }

    public static Decision Reclassify(Run? run, ReclassifyCommand command, DateTimeOffset now)
    {
        if (run is null) return Decision.Refuse(NotFound(command.RunId), null);
        var reclassified = new RunReclassified(run.Status, run.Reason, command.Status, command.Reason,
            command.Evidence, command.Operator, now);
        // The rule the fold applies it by (RunRules.Reclassification) refuses it here.
        if (run.EffectOf(reclassified) is { Kind: EventResultKind.Refused } refused)
        {
            return Decision.Refuse(new Refusal(refused.Reason!, refused.Detail!, run.Status), run);
        }
        return Appending(run, [reclassified], RunView.From);
    }

    public static Decision Observe(Run? run, ObserveCommand command, DateTimeOffset now)
    {
        if (run is null) return Decision.Refuse(NotFound(command.RunId), null);
        var observed = new StatusObserved(command.Source, command.Status, command.ObservedAt, command.Detail, now);
        var effect = run.EffectOf(observed);
        if (effect.Kind == EventResultKind.Duplicate)
        {
            return Decision.Accept([], new ObservationRecorded(run.Id, run.Status, effect.Kind, effect.Reason, false), run);
        }
        return Appending(run, [observed], after =>
        {
            var mismatch = after.Anomalies.Count > run.Anomalies.Count;
            return new ObservationRecorded(run.Id, run.Status, effect.Kind, mismatch ? AnomalyKinds.StatusMismatch : null, mismatch);
        });
    }

    public static Decision ExpireLease(Run? run, ExpireLeaseCommand command, DateTimeOffset now)
    {
        // Finished or heartbeated since the janitor looked: nothing to decide.
        if (run is null || run.Status.IsTerminal() || run.LeaseExpiresAt is not { } expires || expires + command.Grace > now)
        {
            return Decision.Accept([], new LeaseExpiryOutcome(null), run);
        }
        return Appending(run, [new LeaseExpired(expires, now)], after => new LeaseExpiryOutcome(after.Status));
    }

    /// <summary>Folds the events onto a copy, publishes a new verdict beside them, and answers from the result.</summary>
    private static Decision Appending(Run run, List<object> events, Func<Run, IAnswer> answer)
    {
        var after = run.Clone();
        foreach (var e in events) after.Fold(e);
        PublishVerdict(run, after, events);
        after.Version = run.Version + events.Count;
        return Decision.Accept(events, answer(after), after);
    }

    /// <summary>
    /// A new terminal verdict is published beside the facts that produced it, so that cross-run
    /// projections (leaderboards, KPIs) follow verdicts without re-deriving them. The caller then
    /// sets the version of <paramref name="after"/>: the events appended, the verdict included.
    /// </summary>
    private static void PublishVerdict(Run before, Run after, List<object> events)
    {
        if (events.Count > 0 && after.Verdicts.Count > before.Verdicts.Count && after.LatestVerdict() is { } verdict)
        {
            events.Add(verdict);
        }
    }

    public static Refusal NotFound(string runId) =>
        new(ProblemCodes.RunNotFound, $"No run '{runId}' is registered.");

    public static Refusal Terminal(Run run) =>
        new(ProblemCodes.RunTerminal,
            $"The run is over ({Verdict(run)}); nothing can change it. Stop sending events for it.",
            run.Status);

    /// <summary>A terminal run's status as the wire names it, and its reason when it has one: "failed: timeout".</summary>
    private static string Verdict(Run run) => run.Reason is null ? run.Status.Wire() : $"{run.Status.Wire()}: {run.Reason}";

    /// <summary>The last lease token of a terminal run, past the grace in which it still records late events.</summary>
    public static Refusal GraceOver(Run run, TimeSpan grace) =>
        new(ProblemCodes.RunTerminal,
            $"The run is over ({Verdict(run)}) since {run.TerminalAt:O}; its lease token records no late events " +
            $"more than {grace} after the verdict. Stop sending events for it.",
            run.Status);

    /// <summary>A token issued for this run that is no longer its lease: the run was claimed again.</summary>
    public static Refusal LeaseLost(Run run) =>
        new(ProblemCodes.LeaseLost, "The run was claimed again after this lease; this worker must stop.", run.Status);

    public static Refusal LeaseExpired(Run run) =>
        new(ProblemCodes.LeaseExpired,
            $"The lease expired at {run.LeaseExpiresAt:O}; events from it are not accepted. Stop working on this run.",
            run.Status);
}
