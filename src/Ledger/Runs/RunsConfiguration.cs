using JasperFx.Events.Projections;
using Ledger.Infrastructure;
using Marten;

namespace Ledger.Runs;

public static class RunsConfiguration
{
    /// <summary>The run stream, its inline summary (consistent with every write) and the lease index.</summary>
    public static StoreOptions AddRuns(this StoreOptions options)
    {
        options.Projections.Snapshot<Run>(SnapshotLifecycle.Inline);
        options.Projections.Add<LeaseHolderProjection>(ProjectionLifecycle.Inline);
        // The queried fields are columns of their own, each indexed, rather than indexes on expressions of
        // the document: an index on an expression of the document makes every update of the document
        // rewrite every index. With indexes only on columns an event leaves unchanged (a log, a step,
        // a score: most of them), its update is a HOT update (RunStorage sets the room for it).
        options.Schema.For<Run>()
            .Duplicate(r => r.Status)
            .Duplicate(r => r.Board)
            .Duplicate(r => r.Batch)
            .Duplicate(r => r.LeaseExpiresAt)
            // The console's and the API's filters: stuck runs (no heartbeat since) and time ranges are index lookups.
            .Duplicate(r => r.LastHeartbeatAt)
            .Duplicate(r => r.RegisteredAt)
            .Duplicate(r => r.TerminalAt);
        options.Schema.For<LeaseHolder>();
        options.Storage.ExtendedSchemaObjects.Add(RecordedKeyStore.Table(options.DatabaseSchemaName));
        options.Storage.ExtendedSchemaObjects.Add(RunLocks.Function(new StorageNames(options)));
        options.Storage.ExtendedSchemaObjects.Add(RunSnapshotStore.Table(options.DatabaseSchemaName));

        options.Events.AddEventTypes([
            typeof(RunRegistered), typeof(RunClaimed), typeof(RunCancelled), typeof(LeaseExpired), typeof(RunReclassified),
            typeof(VerdictReached), typeof(StatusObserved), typeof(LateEventsCapped),
            .. WorkerEventCatalogue.Default.Types.Select(t => t.Event),
        ]);
        return options;
    }

    /// <summary>
    /// The run's services: its lease tokens, the writer every decision goes through (started before
    /// the janitor that submits to it, stopped after it), the history's reader, the late-event
    /// policy, and the janitor that marks expired leases.
    /// </summary>
    public static IServiceCollection AddRuns(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddSingleton<LeaseTokens>();
        // What the request gate and the input boundary ask of a run, answered by this slice.
        services.AddSingleton<IRunLookup, RunLookup>();
        services.AddSingleton<LeaseTokenDerivation>();
        services.Configure<WriterOptions>(configuration.GetSection(WriterOptions.Section));
        services.AddSingleton<RunWriter>();
        services.Configure<HistoryOptions>(configuration.GetSection(HistoryOptions.Section));
        services.AddSingleton<RunHistoryReader>();
        services.AddHostedService(sp => sp.GetRequiredService<RunWriter>());
        services.Configure<JanitorOptions>(configuration.GetSection(JanitorOptions.Section));
        services.AddOptions<LateEventPolicy>().Bind(configuration.GetSection(LateEventPolicy.Section))
            .Validate(p => p.Grace >= TimeSpan.Zero && p.MaxPerRun >= 0, "Ledger:LateEvents:Grace and MaxPerRun must not be negative.").ValidateOnStart();
        services.AddSingleton<Janitor>();
        services.AddHostedService<JanitorService>();
        return services;
    }
}
