using Ledger.Contract;
using Ledger.Infrastructure;
using Marten;
using Microsoft.Extensions.Options;

namespace Ledger.Forensics;

/// <summary>
/// A refused request, kept with its reason so that a refusal is never silent (invariant 10); its
/// payload and detail redacted of every secret (<see cref="Forensics.Redaction"/>).
/// </summary>
public sealed class Rejection
{
    public Guid Id { get; set; }
    public DateTimeOffset At { get; set; }
    public string? RunId { get; set; }
    public string? Worker { get; set; }
    public required string Reason { get; set; }
    public int HttpStatus { get; set; }
    public string? Detail { get; set; }
    public required string Method { get; set; }
    public required string Path { get; set; }
    public string? Payload { get; set; }
    public bool PayloadTruncated { get; set; }
    /// <summary>A sample of the refusals of requests without valid credentials, which are counted rather than kept (see GET /api/rejections).</summary>
    public bool Unauthenticated { get; set; }
    /// <summary>A sample, without payload, of the refusals of a caller beyond its budget for the hour, which are counted rather than kept.</summary>
    public bool OverBudget { get; set; }
    /// <summary>Who was refused: the start of the SHA-256 digest of its key or lease token (<see cref="CountedRefusals.CallerOf"/>), or <c>console</c>.</summary>
    public string? Caller { get; set; }
    /// <summary>The revision of the redaction rules this row was written or scrubbed under (<see cref="Forensics.Redaction.Version"/>; 0: before them).</summary>
    public int Redaction { get; set; }
}

public sealed class RejectionLog(IDocumentStore store, TimeProvider clock, IOptions<LedgerOptions> options,
    CountedRefusals counted, ILogger<RejectionLog> logger, Ledger.Operations.LedgerMetrics? metrics = null)
{
    /// <summary>The (run, kind) flags this node kept beyond a budget: a flood of them is answered from here, not by a query each.</summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<(string RunId, string Kind), bool> _flaggedBeyondBudget = new();

    /// <summary>
    /// Keeps the refusal, logs it, and returns the response for it. A refusal for want of valid
    /// credentials (401) is not kept here: it is counted, and only sampled, so that nobody can fill the
    /// database; nor is one of a caller beyond its budget for the hour (<see cref="CountedRefusals.Admit"/>).
    /// What is kept and logged is redacted of every secret (<see cref="Redaction"/>).
    /// <paramref name="anomalyKind"/>: what the refusal flags (e.g. <c>late-completion</c>) instead of <c>rejected</c>.
    /// </summary>
    public async Task<IResult> Refuse(HttpContext context, Problem problem, ReadOnlyMemory<byte> payload = default, string? worker = null,
        string? anomalyKind = null)
    {
        // Counted and sampled by CountedRefusals as the answer leaves, like every other 401.
        if (problem.Status == 401) return problem.ToResult();

        var caller = CountedRefusals.CallerOf(context);
        var keeping = counted.Admit(caller, problem.Code);
        if (keeping == Keeping.Counted)
        {
            // A refusal that flags more than itself (a late completion) is never only counted: it is kept as a
            // sample, with its anomaly, the first time for its run, so a flood beyond the budget cannot hide it.
            if (anomalyKind is null || problem.RunId is null || !_flaggedBeyondBudget.TryAdd((problem.RunId, anomalyKind), true)
                || await FlaggedAsync(problem.RunId, anomalyKind))
            {
                logger.LogDebug("Refused {Method} {Path}: {Reason} ({HttpStatus}), counted: caller {Caller} is beyond its budget for the hour",
                    context.Request.Method, context.Request.Path.Value, problem.Code, problem.Status, caller);
                return problem.ToResult();
            }
            keeping = Keeping.Sample;
        }

        var credential = Access.BearerToken(context);
        var body = keeping == Keeping.Whole && payload.Length > 0
            ? Redaction.Payload(context.Request.Method, context.Request.Path, payload.Span, options.Value.RejectionPayloadBytes, credential)
            : null;
        var rejection = new Rejection
        {
            Id = Guid.CreateVersion7(),
            At = clock.GetUtcNow(),
            RunId = problem.RunId,
            Worker = worker,
            Reason = problem.Code,
            HttpStatus = problem.Status,
            Detail = Redaction.Text(problem.Detail, [.. body?.Secrets ?? [], .. credential is null ? Array.Empty<string>() : [credential]]).Text,
            Method = context.Request.Method,
            Path = context.Request.Path,
            Payload = body is { Text.Length: > 0 } ? body.Text : null,
            PayloadTruncated = body?.Truncated ?? false,
            OverBudget = keeping == Keeping.Sample,
            Caller = caller,
            Redaction = Redaction.Version,
        };

        logger.LogInformation("Refused {Method} {Path}: {Reason} ({HttpStatus}) for run {RunId}: {Detail}{Sampled}",
            rejection.Method, rejection.Path, rejection.Reason, rejection.HttpStatus, rejection.RunId, rejection.Detail,
            rejection.OverBudget ? " (beyond the caller's budget for the hour: counted, sampled without payload)" : "");

        try
        {
            await using var session = store.LightweightSession();
            session.Store(rejection);
            var kpis = new KpiDelta().Rejection(rejection);
            // A sample beyond the budget flags only what is more than a refusal (a late completion), so that it is never lost.
            var anomaly = !rejection.OverBudget || anomalyKind is not null ? AnomalyRecord.From(rejection, anomalyKind) : null;
            if (anomaly is not null)
            {
                session.Store(anomaly);
                kpis.Anomaly(anomaly);
            }
            kpis.Queue(session, options.Value.SchemaName);
            await session.SaveChangesAsync(CancellationToken.None);
            if (anomaly is not null) metrics?.Anomaly(anomaly.Kind);
        }
        catch (Exception e) when (problem.Code is ProblemCodes.DatabaseUnavailable || DatabaseFailures.IsTransient(e))
        {
            logger.LogWarning(e, "Could not keep rejection {RejectionId} in the rejection log", rejection.Id);
        }

        return problem.ToResult();
    }

    private async Task<bool> FlaggedAsync(string runId, string kind)
    {
        try
        {
            await using var session = store.QuerySession();
            return await session.Query<AnomalyRecord>().AnyAsync(a => a.RunId == runId && a.Kind == kind);
        }
        catch (Exception e) when (DatabaseFailures.IsTransient(e))
        {
            return true;
        }
    }
}
