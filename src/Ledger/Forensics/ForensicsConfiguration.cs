using Ledger.Infrastructure;
using Marten;

namespace Ledger.Forensics;

public static class ForensicsConfiguration
{
    public static StoreOptions AddForensics(this StoreOptions options)
    {
        // The redaction revision as an indexed column: the scrub at start finds the rows of an earlier one by the index alone.
        options.Schema.For<Rejection>().Index(r => r.RunId).Index(r => r.Reason).Index(r => r.At).Duplicate(r => r.Redaction);
        options.Schema.For<AnomalyRecord>().Index(a => a.Kind).Index(a => a.RunId).Index(a => a.At);
        options.Storage.ExtendedSchemaObjects.Add(CountedRefusals.Table(options.DatabaseSchemaName));
        options.Storage.ExtendedSchemaObjects.Add(KpiCounters.Table(options.DatabaseSchemaName));
        options.Storage.ExtendedSchemaObjects.Add(PrunedCounts.Table(options.DatabaseSchemaName));
        return options;
    }

    public static IServiceCollection AddForensicsServices(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<PruningOptions>().Bind(configuration.GetSection(PruningOptions.Section))
            .Validate(o => o.BatchSize is >= 1 and <= 100_000, "Ledger:Pruning:BatchSize must be 1 to 100000.")
            .ValidateOnStart();
        return services.AddSingleton<RejectionLog>()
            .AddSingleton<ProjectionVerifier>()
            .AddSingleton<KpiStore>()
            // Started first: an earlier version's counts move into its table before the KPIs are ever recounted from it.
            .AddSingleton<CountedRefusals>()
            .AddHostedService(sp => sp.GetRequiredService<CountedRefusals>())
            .AddHostedService<KpiBackfill>()
            // Before the first refusal is kept: rows of an earlier redaction revision are scrubbed.
            .AddSingleton<RejectionScrub>()
            .AddHostedService(sp => sp.GetRequiredService<RejectionScrub>())
            .AddSingleton<Pruner>()
            // The progress of verify, export and rebuild (LongWork).
            .AddOptions<ProgressOptions>().BindConfiguration(ProgressOptions.Section).Services;
    }
}
