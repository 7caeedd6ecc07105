using JasperFx.Events;
using Ledger.Contract;
using Ledger.Runs;
using Marten.Events.Projections;

namespace Ledger.Leaderboards;

public sealed record StandingResult(string RunId, double Score, double? TieBreak, DateTimeOffset CompletedAt);

/// <summary>
/// A change of a participant's place on a board: its best result from <see cref="Sequence"/> (the
/// verdict's position in the event store) and <see cref="At"/> (the verdict's time) on, or no
/// result at all (<see cref="RunId"/> null) when its last ranked run was reclassified away.
/// </summary>
public sealed record StandingChange(string Board, string Participant, long Sequence, DateTimeOffset At, string? RunId, double? Score,
    double? TieBreak, DateTimeOffset? CompletedAt, byte[]? RankKey);

/// <summary>
/// One participant on one board: every succeeded result it has, and the best of them. Built only
/// from verdicts, so a run that is not succeeded can never be ranked.
/// </summary>
public sealed class Standing
{
    public string Id { get; set; } = "";
    public string Board { get; set; } = "";
    public string Participant { get; set; } = "";
    public List<StandingResult> Results { get; set; } = [];
    public string? BestRunId { get; set; }
    public double? BestScore { get; set; }
    public double? BestTieBreak { get; set; }
    public DateTimeOffset? BestCompletedAt { get; set; }
    /// <summary>The best result's key under <see cref="RankingRule"/>; what boards are ordered by.</summary>
    public byte[]? BestRankKey { get; set; }
    public long LastSequence { get; set; }

    public static string Key(string board, string participant) => $"{board}/{participant}";

    public static Standing For(string board, string participant) =>
        new() { Id = Key(board, participant), Board = board, Participant = participant };

    /// <summary>Whether a verdict counts on a board at all (it names a board, a participant and the board's ranking).</summary>
    public static bool Ranks(VerdictReached verdict) => verdict is { Board: not null, Participant: not null, Ranking: not null };

    /// <summary>
    /// Folds a ranked verdict into its standing, created on first sight, exactly as the projection
    /// does; the change of the participant's best, if the verdict changed it.
    /// </summary>
    public static StandingChange? Fold(IDictionary<string, Standing> standings, VerdictReached verdict, long sequence)
    {
        if (!Ranks(verdict)) return null;
        var id = Key(verdict.Board!, verdict.Participant!);
        if (!standings.TryGetValue(id, out var standing)) standings[id] = standing = For(verdict.Board!, verdict.Participant!);
        return standing.Record(verdict, sequence);
    }

    /// <summary>Records a verdict of one of this participant's runs; the change of its best, or null if the best stayed.</summary>
    public StandingChange? Record(VerdictReached verdict, long sequence)
    {
        LastSequence = sequence;
        Results.RemoveAll(r => r.RunId == verdict.RunId);
        var ranking = verdict.Ranking!;
        if (verdict.Status == RunStatus.Succeeded && verdict.Scores.TryGetValue(ranking.PrimaryScore, out var score) && !double.IsNaN(score))
        {
            double? tieBreak = ranking.TieBreakScore is { } t && verdict.Scores.TryGetValue(t, out var tb) && !double.IsNaN(tb) ? tb : null;
            Results.Add(new StandingResult(verdict.RunId, score, tieBreak, verdict.At));
        }

        StandingResult? best = null;
        byte[]? bestKey = null;
        foreach (var result in Results)
        {
            var key = RankingRule.Key(ranking, result);
            if (key is not null && (bestKey is null || RankingRule.Compare(key, bestKey) < 0)) (best, bestKey) = (result, key);
        }

        var changed = best?.RunId != BestRunId || best?.Score != BestScore || best?.TieBreak != BestTieBreak
                      || best?.CompletedAt != BestCompletedAt || !Same(bestKey, BestRankKey);
        BestRunId = best?.RunId;
        BestScore = best?.Score;
        BestTieBreak = best?.TieBreak;
        BestCompletedAt = best?.CompletedAt;
        BestRankKey = bestKey;
        return changed
            ? new StandingChange(Board, Participant, sequence, verdict.At, BestRunId, BestScore, BestTieBreak, BestCompletedAt, BestRankKey)
            : null;
    }

    private static bool Same(byte[]? a, byte[]? b) => a is null ? b is null : b is not null && a.AsSpan().SequenceEqual(b);
}
