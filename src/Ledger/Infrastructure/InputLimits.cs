namespace Ledger.Infrastructure;

/// <summary>
/// The sizes a request may have, each named once: the validators enforce them and the API description
/// (<see cref="OpenApi.RequestSchemas"/>) states them, so the two cannot say different things.
/// The worker events' own limits sit with their validator (<see cref="Runs.WorkerEventRequest.Validator"/>).
/// </summary>
public static class InputLimits
{
    /// <summary>A name a person reads: a participant, a worker, a claimId, a source, an operator, a score, an output.</summary>
    public const int MaxName = 200;

    /// <summary>A board's or a batch's title.</summary>
    public const int MaxTitle = 200;

    /// <summary>What an operator writes: a reason, one piece of evidence.</summary>
    public const int MaxReason = 500;

    /// <summary>The pieces of evidence of one reclassification.</summary>
    public const int MaxEvidence = 50;

    /// <summary>The scores, or the outputs, a run may require.</summary>
    public const int MaxRequiredNames = 100;

    /// <summary>The labels of a run, or of one expected run of a batch.</summary>
    public const int MaxLabels = 32;

    public const int MaxLabelKey = 64;
    public const int MaxLabelValue = 200;
}
