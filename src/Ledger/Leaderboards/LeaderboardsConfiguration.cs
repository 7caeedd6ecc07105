using JasperFx.Events.Projections;
using Marten;

namespace Ledger.Leaderboards;

public static class LeaderboardsConfiguration
{
    /// <summary>
    /// Standings are an async multi-stream projection: one writer (the daemon) folds verdicts in
    /// sequence order, so concurrent verdicts for one participant never overwrite each other.
    /// </summary>
    public static StoreOptions AddLeaderboards(this StoreOptions options)
    {
        options.Schema.For<Board>();
        options.Projections.Add<StandingProjection>(ProjectionLifecycle.Async);
        // The leaderboard reads these columns only, never the documents with their result histories.
        options.Schema.For<Standing>()
            .Duplicate(s => s.Board)
            .Duplicate(s => s.Participant)
            .Duplicate(s => s.BestScore!)
            .Duplicate(s => s.BestTieBreak!)
            .Duplicate(s => s.BestCompletedAt!)
            .Duplicate(s => s.BestRunId!);
        return options;
    }

    public static IServiceCollection AddLeaderboardServices(this IServiceCollection services) =>
        services.AddSingleton<BoardCatalog>();
}
