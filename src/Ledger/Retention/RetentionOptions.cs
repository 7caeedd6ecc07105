using Ledger.Infrastructure;
using Ledger.Runs;
using Microsoft.Extensions.Options;

namespace Ledger.Retention;

/// <summary>
/// The retention policy (<c>Ledger:Retention:*</c>): when finished runs leave PostgreSQL as verifiable
/// archives, where the archives go, and how the sweep paces itself. Off unless
/// <see cref="ArchiveAfter"/> is set. <see cref="Directory"/> is also where archived runs are read
/// from, so it stays configured for as long as archives exist, even with the policy turned off.
/// </summary>
public sealed class RetentionOptions
{
    public const string Section = "Ledger:Retention";

    /// <summary>The key of the lease tokens' grace after a verdict (<see cref="LateEventPolicy.Grace"/>), which the window must exceed.</summary>
    public const string LateEventsGraceKey = LateEventPolicy.Section + ":" + nameof(LateEventPolicy.Grace);

    /// <summary>How long after its latest verdict a run is archived; null (the default) archives nothing.</summary>
    public TimeSpan? ArchiveAfter { get; set; }
    /// <summary>The folder the archives are written to and read from (a local or mounted folder).</summary>
    public string? Directory { get; set; }
    /// <summary>How often the node that runs the async projections sweeps.</summary>
    public TimeSpan SweepInterval { get; set; } = TimeSpan.FromMinutes(5);
    /// <summary>Runs looked at per round of a sweep; a sweep goes on until nothing is left to archive.</summary>
    public int BatchSize { get; set; } = 200;
    /// <summary>
    /// False: this node never sweeps on its own, even when it runs the projections (the tests sweep
    /// explicitly; a node may also be kept for reads only). Archives are still read and restored.
    /// </summary>
    public bool Sweeper { get; set; } = true;

    /// <summary>Runs archived at once by a sweep (each writes its own file and commits its own transaction).</summary>
    public int Parallelism { get; set; } = 2;

    /// <summary>Events per independently compressed chunk of an archive: what one ranged read decompresses at most.</summary>
    public int ChunkEvents { get; set; } = 250;
    /// <summary>
    /// The sweep vacuums the tables it removed rows from once their dead rows pass a twentieth of the live
    /// ones (<see cref="ReclaimSpaceStep"/>); false leaves that to the database's own vacuuming.
    /// </summary>
    public bool Vacuum { get; set; } = true;
    /// <summary>Nothing is archived while the archive directory's file system has less free than this (0: no floor).</summary>
    public long MinFreeBytes { get; set; } = 64L * 1024 * 1024;
    /// <summary>
    /// For fault drills only: how long a sweep waits after an archive is written and checked, before
    /// the run's events are removed (so that a test can kill the process in between). Zero otherwise.
    /// </summary>
    public TimeSpan FaultPauseAfterWrite { get; set; }

    public bool Enabled => ArchiveAfter is not null;

    /// <summary>The grace the window must be longer than, bound from the late-event policy's own section.</summary>
    public static TimeSpan LateEventsGrace(IConfiguration configuration) =>
        (configuration.GetSection(LateEventPolicy.Section).Get<LateEventPolicy>() ?? LateEventPolicy.Default).Grace;

    /// <summary>What is wrong with these settings; empty when they can be used.</summary>
    public IReadOnlyList<string> Problems(TimeSpan lateEventsGrace)
    {
        var problems = new List<string>();
        if (ArchiveAfter is { } window)
        {
            if (window <= lateEventsGrace)
            {
                problems.Add($"Ledger:Retention:ArchiveAfter ({window}) must be longer than {LateEventsGraceKey} ({lateEventsGrace}): " +
                             "a run must not leave PostgreSQL while its lease token may still send events.");
            }
            if (string.IsNullOrWhiteSpace(Directory))
            {
                problems.Add("Ledger:Retention:Directory (environment Ledger__Retention__Directory) must be set when Ledger:Retention:ArchiveAfter is.");
            }
        }
        if (SweepInterval < TimeSpan.FromSeconds(1)) problems.Add("Ledger:Retention:SweepInterval must be at least 00:00:01.");
        if (BatchSize is < 1 or > 10_000) problems.Add("Ledger:Retention:BatchSize must be between 1 and 10000.");
        if (ChunkEvents is < 10 or > 100_000) problems.Add("Ledger:Retention:ChunkEvents must be between 10 and 100000.");
        if (Parallelism is < 1 or > 64) problems.Add("Ledger:Retention:Parallelism must be between 1 and 64.");
        if (MinFreeBytes < 0) problems.Add("Ledger:Retention:MinFreeBytes must be 0 or more.");
        return problems;
    }

    /// <summary>Refuses a start whose retention settings cannot be used, before anything is started (as <see cref="LedgerOptionsValidation.Check"/>).</summary>
    public static void Check(IConfiguration configuration)
    {
        RetentionOptions options;
        TimeSpan grace;
        try
        {
            options = configuration.GetSection(Section).Get<RetentionOptions>() ?? new RetentionOptions();
            grace = LateEventsGrace(configuration);
        }
        catch (InvalidOperationException e)
        {
            throw new StartupFailureException(StartupFailure.Configuration, e.Message.ReplaceLineEndings(" "));
        }
        var problems = options.Problems(grace);
        if (problems.Count > 0) throw new StartupFailureException(StartupFailure.Configuration, string.Join(" ", problems));
    }
}

/// <summary>The same checks at host start (ValidateOnStart), for hosts built without <see cref="RetentionOptions.Check"/>.</summary>
public sealed class RetentionOptionsValidation(IConfiguration configuration) : IValidateOptions<RetentionOptions>
{
    public ValidateOptionsResult Validate(string? name, RetentionOptions options)
    {
        var problems = options.Problems(RetentionOptions.LateEventsGrace(configuration));
        return problems.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(problems);
    }
}
