using Ledger.Leaderboards;

namespace Ledger.Tests.Leaderboards;

/// <summary>The ranking rule itself, by example: every board (live, as of a time, verify, bench) orders by these keys.</summary>
public sealed class RankingRuleTests
{
    private static readonly DateTimeOffset T0 = new(2026, 11, 30, 12, 0, 0, TimeSpan.Zero);
    private static readonly Ranking MaxWithMinTie = new("score", Direction.Max, "speed", Direction.Min);
    private static readonly Ranking MinWithMaxTie = new("loss", Direction.Min, "coverage", Direction.Max);

    private static byte[] Key(Ranking ranking, double score, double? tieBreak = null, int seconds = 0, string runId = "r") =>
        RankingRule.Key(ranking, score, tieBreak, T0.AddSeconds(seconds), runId)!;

    private static void Before(byte[] better, byte[] worse) =>
        Assert.True(RankingRule.Compare(better, worse) < 0 && RankingRule.Compare(worse, better) > 0, "expected the first to rank before the second");

    [Theory]
    [InlineData(0.9, 0.5)]
    [InlineData(1.0, -1.0)]
    [InlineData(-0.5, -0.75)]
    [InlineData(1e300, 1e-300)]
    [InlineData(0.0, -1e-300)]
    [InlineData(double.PositiveInfinity, double.MaxValue)]
    public void a_max_board_ranks_the_higher_score_first_and_a_min_board_the_lower(double higher, double lower)
    {
        Before(Key(MaxWithMinTie, higher), Key(MaxWithMinTie, lower));
        Before(Key(MinWithMaxTie, lower), Key(MinWithMaxTie, higher));
    }

    [Fact]
    public void minus_zero_and_zero_are_the_same_score()
    {
        Assert.Equal(Key(MaxWithMinTie, 0.0), Key(MaxWithMinTie, -0.0));
    }

    [Fact]
    public void on_equal_scores_the_tie_break_decides_in_its_own_direction()
    {
        Before(Key(MaxWithMinTie, 0.5, tieBreak: 1), Key(MaxWithMinTie, 0.5, tieBreak: 2));
        Before(Key(MinWithMaxTie, 0.5, tieBreak: 2), Key(MinWithMaxTie, 0.5, tieBreak: 1));
    }

    [Fact]
    public void a_missing_or_nan_tie_break_ranks_after_any_present_one_in_both_directions()
    {
        foreach (var ranking in new[] { MaxWithMinTie, MinWithMaxTie })
        {
            Before(Key(ranking, 0.5, tieBreak: double.MaxValue), Key(ranking, 0.5, tieBreak: null));
            Before(Key(ranking, 0.5, tieBreak: -double.MaxValue), Key(ranking, 0.5, tieBreak: null));
            Assert.Equal(Key(ranking, 0.5, tieBreak: null), Key(ranking, 0.5, tieBreak: double.NaN));
        }
    }

    [Fact]
    public void the_score_outranks_the_tie_break()
    {
        Before(Key(MaxWithMinTie, 0.6, tieBreak: 100), Key(MaxWithMinTie, 0.5, tieBreak: 0));
    }

    [Fact]
    public void on_equal_scores_and_tie_breaks_the_earlier_completion_wins_then_the_run_id()
    {
        Before(Key(MaxWithMinTie, 0.5, 1, seconds: 1, runId: "z"), Key(MaxWithMinTie, 0.5, 1, seconds: 2, runId: "a"));
        // Equal timestamps: the run id, ordinally (upper case before lower case, a prefix first).
        Before(Key(MaxWithMinTie, 0.5, 1, runId: "B"), Key(MaxWithMinTie, 0.5, 1, runId: "a"));
        Before(Key(MaxWithMinTie, 0.5, 1, runId: "run-1"), Key(MaxWithMinTie, 0.5, 1, runId: "run-10"));
    }

    [Fact]
    public void a_nan_primary_score_is_not_ranked()
    {
        Assert.Null(RankingRule.Key(MaxWithMinTie, double.NaN, 1, T0, "r"));
    }

    [Fact]
    public void keys_of_random_results_order_as_the_rule_reads_lexicographically()
    {
        // The rule in words, as a tuple order: (score in direction, tie-break present first then in
        // its direction, completion, run id). Random results with many ties on every part.
        var random = new Random(7);
        foreach (var ranking in new[] { MaxWithMinTie, MinWithMaxTie, new Ranking("s", Direction.Max, null, Direction.Max) })
        {
            var results = Enumerable.Range(0, 400).Select(_ => (
                Score: random.Next(5) - 2 + random.Next(3) * 0.25,
                TieBreak: ranking.TieBreakScore is null || random.Next(4) == 0 ? (double?)null : random.Next(3),
                Seconds: random.Next(3),
                RunId: $"r{random.Next(6)}")).ToList();
            var byKey = results.OrderBy(r => Key(ranking, r.Score, r.TieBreak, r.Seconds, r.RunId), RankingRule.Order).ToList();
            var sign = ranking.Direction == Direction.Max ? -1 : 1;
            var tieSign = ranking.TieBreakDirection == Direction.Max ? -1 : 1;
            var byWords = results
                .OrderBy(r => sign * r.Score)
                .ThenBy(r => r.TieBreak is null ? 1 : 0).ThenBy(r => tieSign * (r.TieBreak ?? 0))
                .ThenBy(r => r.Seconds).ThenBy(r => r.RunId, StringComparer.Ordinal)
                .ToList();
            Assert.Equal(byWords, byKey);
        }
    }
}
