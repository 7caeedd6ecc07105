using Ledger.Infrastructure;
using Marten;

namespace Ledger.Forensics;

public static class ForensicsConfiguration
{
    public static StoreOptions AddForensics(this StoreOptions options)
    {
        options.Schema.For<Rejection>().Index(r => r.RunId).Index(r => r.Reason).Index(r => r.At);
        options.Schema.For<AnomalyRecord>().Index(a => a.Kind).Index(a => a.RunId).Index(a => a.At);
        options.Storage.ExtendedSchemaObjects.Add(UnauthenticatedRefusals.Table(options.DatabaseSchemaName));
        options.Storage.ExtendedSchemaObjects.Add(KpiCounters.Table(options.DatabaseSchemaName));
        return options;
    }

    public static IServiceCollection AddForensicsServices(this IServiceCollection services) =>
        services.AddSingleton<ProjectionVerifier>()
            .AddSingleton<KpiStore>()
            .AddHostedService<KpiBackfill>()
            .AddSingleton<UnauthenticatedRefusals>()
            .AddHostedService(sp => sp.GetRequiredService<UnauthenticatedRefusals>())
            // The progress of verify, export and rebuild (LongWork).
            .AddOptions<ProgressOptions>().BindConfiguration(ProgressOptions.Section).Services;
}
