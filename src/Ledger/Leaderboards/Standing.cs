using JasperFx.Events;
using Ledger.Runs;
using Marten.Events.Projections;

namespace Ledger.Leaderboards;

public sealed record StandingResult(string RunId, double Score, double? TieBreak, DateTimeOffset CompletedAt);

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
    public long LastSequence { get; set; }

    public static string Key(string board, string participant) => $"{board}/{participant}";

    public static Standing For(string board, string participant) =>
        new() { Id = Key(board, participant), Board = board, Participant = participant };

    /// <summary>Folds a ranked verdict into its standing, created on first sight, exactly as the projection does.</summary>
    public static void Fold(IDictionary<string, Standing> standings, VerdictReached verdict, long sequence)
    {
        if (verdict is not { Board: { } board, Participant: { } participant, Ranking: not null }) return;
        var id = Key(board, participant);
        if (!standings.TryGetValue(id, out var standing)) standings[id] = standing = For(board, participant);
        standing.Record(verdict, sequence);
    }

    public void Record(VerdictReached verdict, long sequence)
    {
        LastSequence = sequence;
        Results.RemoveAll(r => r.RunId == verdict.RunId);
        var ranking = verdict.Ranking!;
        if (verdict.Status == RunStatus.Succeeded && verdict.Scores.TryGetValue(ranking.PrimaryScore, out var score))
        {
            double? tieBreak = ranking.TieBreakScore is { } t && verdict.Scores.TryGetValue(t, out var tb) ? tb : null;
            Results.Add(new StandingResult(verdict.RunId, score, tieBreak, verdict.At));
        }

        var best = Results.Count == 0 ? null : Results.Order(new ResultOrder(ranking)).First();
        BestRunId = best?.RunId;
        BestScore = best?.Score;
        BestTieBreak = best?.TieBreak;
        BestCompletedAt = best?.CompletedAt;
    }
}

/// <summary>Better first: primary score in the board's direction, then the tie-break, then the earliest completion.</summary>
public sealed class ResultOrder(Ranking ranking) : IComparer<StandingResult>
{
    public int Compare(StandingResult? x, StandingResult? y)
    {
        if (ReferenceEquals(x, y)) return 0;
        if (x is null) return 1;
        if (y is null) return -1;
        var byScore = Directed(x.Score, y.Score, ranking.Direction);
        if (byScore != 0) return byScore;
        var byTieBreak = Directed(x.TieBreak ?? double.NaN, y.TieBreak ?? double.NaN, ranking.TieBreakDirection);
        if (byTieBreak != 0) return byTieBreak;
        var byTime = x.CompletedAt.CompareTo(y.CompletedAt);
        return byTime != 0 ? byTime : string.CompareOrdinal(x.RunId, y.RunId);
    }

    private static int Directed(double x, double y, Direction direction) =>
        direction == Direction.Max ? y.CompareTo(x) : x.CompareTo(y);
}

public sealed partial class StandingProjection : MultiStreamProjection<Standing, string>
{
    public StandingProjection()
    {
        Identities<VerdictReached>(v => v.Board is { } board && v.Participant is { } participant && v.Ranking is not null
            ? [Standing.Key(board, participant)]
            : []);
    }

    public Standing Create(IEvent<VerdictReached> e)
    {
        var standing = Standing.For(e.Data.Board!, e.Data.Participant!);
        standing.Record(e.Data, e.Sequence);
        return standing;
    }

    public void Apply(IEvent<VerdictReached> e, Standing standing) => standing.Record(e.Data, e.Sequence);
}
