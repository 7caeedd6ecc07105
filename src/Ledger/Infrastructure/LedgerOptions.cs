namespace Ledger.Infrastructure;

/// <summary>Bound from the <c>Ledger</c> configuration section (environment <c>Ledger__*</c>).</summary>
public sealed class LedgerOptions
{
    public const string Section = "Ledger";

    /// <summary>Orchestrator key: registers, cancels, reclassifies, reads.</summary>
    public string? AdminKey { get; set; }
    /// <summary>Keys that may claim runs.</summary>
    public List<string> WorkerKeys { get; set; } = [];
    /// <summary>Keys that may read.</summary>
    public List<string> ReadKeys { get; set; } = [];
    /// <summary>
    /// The secret lease tokens of claims with a claimId are derived from (HMAC), so that a retried
    /// claim can be answered with the same token without storing it. Unset: derived from
    /// <see cref="AdminKey"/>, which every instance already shares.
    /// </summary>
    public string? LeaseTokenSecret { get; set; }

    public int DefaultLeaseSeconds { get; set; } = 300;
    public int MaxLeaseSeconds { get; set; } = 86_400;
    /// <summary>Largest request body accepted, in bytes; bounds a request's memory.</summary>
    public int MaxPayloadBytes { get; set; } = 1024 * 1024;
    public int MaxEventsPerRequest { get; set; } = 1000;
    /// <summary>How much of a refused payload the rejection log keeps.</summary>
    public int RejectionPayloadBytes { get; set; } = 8 * 1024;
    public string SchemaName { get; set; } = "ledger";
    /// <summary>How this instance runs the async projections: Leader (Marten's HotCold: one elected among instances), Solo, or Disabled.</summary>
    public ProjectionDaemonMode DaemonMode { get; set; } = ProjectionDaemonMode.Leader;
    /// <summary>The async daemon's election and health-check timing (docs/operations.md, "Running several nodes").</summary>
    public ProjectionDaemonOptions Projections { get; set; } = new();

    public EmbeddedPostgresOptions EmbeddedPostgres { get; set; } = new();

    /// <summary>What the rejection log keeps (a budget per caller and hour), counts and samples, and for how long.</summary>
    public Ledger.Forensics.RejectionOptions Rejections { get; set; } = new();
}

/// <summary>
/// The checks on <see cref="LedgerOptions"/>: run at host start (ValidateOnStart) and, before
/// anything is started, by <see cref="Check"/>, so that a refused configuration starts nothing.
/// </summary>
public sealed class LedgerOptionsValidation(IHostEnvironment? environment = null) : Microsoft.Extensions.Options.IValidateOptions<LedgerOptions>
{
    /// <summary>The shortest key (admin, worker, read, lease-token secret) accepted outside Development.</summary>
    public const int MinimumKeyLength = 16;

    public Microsoft.Extensions.Options.ValidateOptionsResult Validate(string? name, LedgerOptions options)
    {
        var failures = new List<string>();
        if (string.IsNullOrWhiteSpace(options.AdminKey)) failures.Add("Ledger:AdminKey (environment Ledger__AdminKey) must be set.");
        if (environment is not null && !environment.IsDevelopment()) failures.AddRange(OutsideDevelopment(options));
        if (options.MaxPayloadBytes < 1024) failures.Add("Ledger:MaxPayloadBytes must be at least 1024.");
        if (options.Rejections.BudgetPerKeyHour < 0) failures.Add("Ledger:Rejections:BudgetPerKeyHour must be 0 or more.");
        if (options.Rejections.SamplesPerHour < 0) failures.Add("Ledger:Rejections:SamplesPerHour must be 0 or more.");
        if (options.Projections.LeadershipPollingMilliseconds < 100) failures.Add("Ledger:Projections:LeadershipPollingMilliseconds must be at least 100.");
        if (options.Projections.HealthCheckPollingMilliseconds < 100) failures.Add("Ledger:Projections:HealthCheckPollingMilliseconds must be at least 100.");
        if (options.Projections.StaleSequenceThresholdMilliseconds < 100) failures.Add("Ledger:Projections:StaleSequenceThresholdMilliseconds must be at least 100.");
        if (options.Projections.IdlePollingMilliseconds < 100) failures.Add("Ledger:Projections:IdlePollingMilliseconds must be at least 100.");
        if (options.Projections.WakeIntervalMilliseconds < 10) failures.Add("Ledger:Projections:WakeIntervalMilliseconds must be at least 10.");
        return failures.Count == 0
            ? Microsoft.Extensions.Options.ValidateOptionsResult.Success
            : Microsoft.Extensions.Options.ValidateOptionsResult.Fail(failures);
    }

    /// <summary>What Development allows and other environments refuse: short keys (never shown), a trusting private PostgreSQL.</summary>
    private static IEnumerable<string> OutsideDevelopment(LedgerOptions options)
    {
        var keys = new List<(string Setting, string? Value)> { ("Ledger:AdminKey", options.AdminKey), ("Ledger:LeaseTokenSecret", options.LeaseTokenSecret) };
        keys.AddRange(options.WorkerKeys.Select((k, i) => ($"Ledger:WorkerKeys:{i}", (string?)k)));
        keys.AddRange(options.ReadKeys.Select((k, i) => ($"Ledger:ReadKeys:{i}", (string?)k)));
        // An empty entry is no key (docker-compose passes unset keys as empty strings).
        var tooShort = keys.Where(k => !string.IsNullOrWhiteSpace(k.Value) && k.Value.Length < MinimumKeyLength).Select(k => k.Setting).ToList();
        if (tooShort.Count > 0)
        {
            yield return $"{string.Join(", ", tooShort)} {(tooShort.Count == 1 ? "is" : "are")} shorter than {MinimumKeyLength} characters; " +
                         $"outside Development every key must have at least {MinimumKeyLength} (e.g. `openssl rand -hex 24`).";
        }
        if (options.EmbeddedPostgres.TrustLocalConnections)
        {
            yield return "Ledger:EmbeddedPostgres:TrustLocalConnections lets every local user into the database without a password; it is refused outside Development.";
        }
    }

    /// <summary>Fails with the same messages as the start-up validation, from the configuration alone.</summary>
    public static void Check(IConfiguration configuration, IHostEnvironment environment)
    {
        LedgerOptions options;
        try
        {
            options = configuration.GetSection(LedgerOptions.Section).Get<LedgerOptions>() ?? new LedgerOptions();
        }
        catch (InvalidOperationException e)
        {
            // A value that does not convert (e.g. Ledger:Port=abc) names its key in the message.
            throw new StartupFailureException(StartupFailure.Configuration, e.Message.ReplaceLineEndings(" "));
        }
        var result = new LedgerOptionsValidation(environment).Validate(null, options);
        if (result.Failed) throw new StartupFailureException(StartupFailure.Configuration, string.Join(" ", result.Failures ?? []));
        // A certificate for the key ring, or a proxy address, that cannot be used is refused here, before anything starts.
        Ledger.Web.KeyRingProtection.LoadCertificates(configuration);
        ForwardedHeadersSetup.Read(configuration);
    }
}
