using Marten;
using Microsoft.Extensions.Options;

namespace Ledger.Retention;

public static class RetentionConfiguration
{
    /// <summary>The marker event and the retention tables.</summary>
    public static StoreOptions AddRetention(this StoreOptions options)
    {
        options.Events.AddEventType(typeof(RunArchived));
        options.Storage.ExtendedSchemaObjects.Add(ArchivedRunStore.Table(options.DatabaseSchemaName));
        options.Storage.ExtendedSchemaObjects.Add(ArchivedRunStore.Sweeps(options.DatabaseSchemaName));
        return options;
    }

    /// <summary>The policy, the archive's files and readers, the sweep (its steps in order) and the service that runs it.</summary>
    public static IServiceCollection AddRetentionServices(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<RetentionOptions>().Bind(configuration.GetSection(RetentionOptions.Section)).ValidateOnStart();
        services.AddSingleton<IValidateOptions<RetentionOptions>, RetentionOptionsValidation>();
        services.AddSingleton(sp =>
        {
            var policy = sp.GetRequiredService<IOptions<RetentionOptions>>().Value;
            return new ArchiveFiles(policy.Directory, policy.MinFreeBytes);
        });
        services.AddSingleton<RunArchives>();
        services.AddSingleton<RunArchiver>();
        services.AddSingleton<RunRestorer>();
        // The steps of a sweep, in order: archive finished runs, reclaim the space they left, prune the logs.
        services.AddSingleton<IRetentionStep, ArchiveRunsStep>();
        services.AddSingleton<IRetentionStep, ReclaimSpaceStep>();
        services.AddSingleton<IRetentionStep, PruneLogsStep>();
        services.AddSingleton<RetentionSweeper>();
        services.AddHostedService<RetentionService>();
        return services;
    }
}
