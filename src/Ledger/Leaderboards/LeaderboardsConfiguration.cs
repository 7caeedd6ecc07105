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
        // The documents are the fold's state; boards are read from the projection's own tables.
        // Numeric revisions, as Marten gave the projected aggregate before: a database written by that version keeps its table as it is.
        options.Schema.For<Standing>().UseNumericRevisions(true);
        StandingsProjection.Register(options);
        return options;
    }

    public static IServiceCollection AddLeaderboardServices(this IServiceCollection services, IConfiguration configuration)
    {
        services.Configure<LeaderboardOptions>(configuration.GetSection(LeaderboardOptions.Section));
        return services.AddSingleton<BoardCatalog>().AddSingleton<BoardPageCache>().InitializeMartenWith<StandingsUpgrade>();
    }
}
