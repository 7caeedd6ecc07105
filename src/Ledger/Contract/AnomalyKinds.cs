namespace Ledger.Contract;

/// <summary>
/// Every kind an anomaly can have, in one vocabulary: those a run's fold derives and those of refused
/// requests kept as rejections (each an <see cref="IAnomaly"/>).
/// </summary>
public static class AnomalyKinds
{
    public const string LateEvent = "late-event";
    public const string LateCompletion = "late-completion";
    public const string CompletedBeforeResults = "completed-before-results";
    public const string AccountingMismatch = "accounting-mismatch";
    public const string StatusMismatch = "status-mismatch";
    /// <summary>A refused score of another value than the one recorded.</summary>
    public const string ScoreConflict = "score-conflict";
    /// <summary>Any other refused request that was kept.</summary>
    public const string Rejected = "rejected";

    public static readonly IReadOnlyList<string> All =
    [
        LateEvent, LateCompletion, CompletedBeforeResults, AccountingMismatch, StatusMismatch, ScoreConflict, Rejected,
    ];
}

/// <summary>An anomaly as the ledger shows it: its <see cref="Kind"/> is one of <see cref="AnomalyKinds"/> (the API description lists them).</summary>
public interface IAnomaly
{
    string Kind { get; }
}
