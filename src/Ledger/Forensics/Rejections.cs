using System.Text;
using Ledger.Infrastructure;
using Marten;
using Microsoft.Extensions.Options;

namespace Ledger.Forensics;

/// <summary>A refused request, kept with its reason so that a refusal is never silent (invariant 10).</summary>
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
}

public sealed class RejectionLog(IDocumentStore store, TimeProvider clock, IOptions<LedgerOptions> options,
    ILogger<RejectionLog> logger, Ledger.Operations.LedgerMetrics? metrics = null)
{
    /// <summary>
    /// Keeps the refusal, logs it, and returns the response for it. A refusal for want of valid
    /// credentials (401) is not kept here: it is counted, and only sampled, so that nobody can fill the database.
    /// </summary>
    public async Task<IResult> Refuse(HttpContext context, Problem problem, ReadOnlyMemory<byte> payload = default, string? worker = null)
    {
        // Counted and sampled by UnauthenticatedRefusals as the answer leaves, like every other 401.
        if (problem.Status == 401) return problem.ToResult();

        var cap = options.Value.RejectionPayloadBytes;
        var kept = payload.Length > cap ? payload[..cap] : payload;
        var rejection = new Rejection
        {
            Id = Guid.CreateVersion7(),
            At = clock.GetUtcNow(),
            RunId = problem.RunId,
            Worker = worker,
            Reason = problem.Code,
            HttpStatus = problem.Status,
            Detail = problem.Detail,
            Method = context.Request.Method,
            Path = context.Request.Path,
            Payload = kept.Length == 0 ? null : Encoding.UTF8.GetString(kept.Span),
            PayloadTruncated = payload.Length > cap,
        };

        logger.LogInformation("Refused {Method} {Path}: {Reason} ({HttpStatus}) for run {RunId}: {Detail}",
            rejection.Method, rejection.Path, rejection.Reason, rejection.HttpStatus, rejection.RunId, rejection.Detail);

        try
        {
            await using var session = store.LightweightSession();
            session.Store(rejection);
            var anomaly = AnomalyRecord.From(rejection);
            session.Store(anomaly);
            new KpiDelta().Rejection(rejection).Anomaly(anomaly).Queue(session, options.Value.SchemaName);
            await session.SaveChangesAsync(CancellationToken.None);
            metrics?.Anomaly(anomaly.Kind);
        }
        catch (Exception e) when (problem.Code is ProblemCodes.DatabaseUnavailable || DatabaseFailures.IsTransient(e))
        {
            logger.LogWarning(e, "Could not keep rejection {RejectionId} in the rejection log", rejection.Id);
        }

        return problem.ToResult();
    }
}
