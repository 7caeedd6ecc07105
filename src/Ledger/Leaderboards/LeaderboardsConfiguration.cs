using JasperFx.Events.Projections;
using Ledger.Infrastructure;
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

    /// <summary>
    /// With <c>Ledger:Projections:WakeOnVerdict</c>: verdict transactions notify (any node) and the
    /// projection leader listens, so a verdict reaches the boards before the next poll (<see cref="VerdictWakeup"/>).
    /// </summary>
    public static IServiceCollection AddVerdictWakeup(this IServiceCollection services, string connectionString, ProjectionDaemonOptions projections)
    {
        if (!projections.WakeOnVerdict) return services;
        services.AddSingleton(sp => new VerdictWakeup(connectionString,
            TimeSpan.FromMilliseconds(projections.WakeIntervalMilliseconds), sp.GetRequiredService<ILogger<VerdictWakeup>>()));
        services.ConfigureMarten((sp, options) =>
        {
            options.Listeners.Add(new VerdictNotifier());
            options.Projections.Wakeup = sp.GetRequiredService<VerdictWakeup>();
        });
        return services;
    }
}
