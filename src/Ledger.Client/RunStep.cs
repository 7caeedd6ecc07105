namespace Ledger.Client;

/// <summary>
/// One step of a run, opened by <see cref="RunSession.StepAsync(string, CancellationToken)"/>
/// with <c>step.started</c>. Its disposal sends <c>step.completed</c> with the same step id, so a
/// step event without its id cannot be written. The outcome is <c>ok</c> unless <see cref="Fail"/>
/// was called (the delegate form of <c>StepAsync</c> calls it when the step throws). Nothing is
/// sent when the run has already ended.
/// </summary>
public sealed class RunStep : IAsyncDisposable
{
    public const string Ok = "ok";
    public const string Failed = "failed";

    private readonly RunSession _session;
    private string _outcome = Ok;
    private int _completed;

    internal RunStep(RunSession session, string stepId, string name)
    {
        _session = session;
        StepId = stepId;
        Name = name;
    }

    public string StepId { get; }
    public string Name { get; }

    /// <summary>Marks the step failed: its disposal sends outcome <c>failed</c>. (The ledger keeps a step's
    /// outcome only; say why with <see cref="RunSession.LogAsync(string, CancellationToken)"/> or
    /// <see cref="RunSession.FailAsync"/>.)</summary>
    public void Fail() => _outcome = Failed;

    /// <summary>Completes the step now with <paramref name="outcome"/> (at most 64 characters; the ledger keeps it as sent).</summary>
    public async Task CompleteAsync(string outcome = Ok, CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _completed, 1) != 0) return;
        await _session.SendAsync(EventTypes.StepCompleted, cancellationToken, stepId: StepId, outcome: outcome);
    }

    public async ValueTask DisposeAsync()
    {
        if (_session.IsEnded) return;
        await CompleteAsync(_outcome);
    }
}
