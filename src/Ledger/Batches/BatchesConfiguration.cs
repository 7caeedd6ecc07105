using Marten;

namespace Ledger.Batches;

/// <summary>Bound from <c>Ledger:Batches</c>.</summary>
public sealed class BatchOptions
{
    public const string Section = "Ledger:Batches";

    /// <summary>A registered run that has no verdict this long after its registration is listed as missing.</summary>
    public int MissingAfterSeconds { get; set; } = 3600;
    /// <summary>The most runs one batch may expect (after expanding its matrix).</summary>
    public int MaxExpectedRuns { get; set; } = 10_000;
}

public static class BatchesConfiguration
{
    /// <summary>
    /// A batch is a document: what a fan-out expects, fixed when it is defined. What it holds is
    /// never stored: it is computed at read time from the runs registered with its id (the inline
    /// run documents, indexed by batch), so two runs registering at once each write only their own
    /// stream and no slot can be lost to a race.
    /// </summary>
    public static StoreOptions AddBatches(this StoreOptions options)
    {
        options.Schema.For<Batch>();
        return options;
    }

    public static IServiceCollection AddBatches(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<BatchOptions>().Bind(configuration.GetSection(BatchOptions.Section))
            .Validate(o => o.MissingAfterSeconds >= 1, "Ledger:Batches:MissingAfterSeconds must be at least 1.")
            .Validate(o => o.MaxExpectedRuns is >= 1 and <= 100_000, "Ledger:Batches:MaxExpectedRuns must be between 1 and 100000.")
            .ValidateOnStart();
        return services;
    }
}
