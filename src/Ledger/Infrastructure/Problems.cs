using System.Text.Json;
using System.Text.Json.Serialization;
using Ledger.Runs;

namespace Ledger.Infrastructure;

/// <summary>
/// The stable catalogue of refusals. A code never changes meaning once published: clients
/// match on <see cref="Problem.Type"/> and decide from <c>retryable</c> whether to try again.
/// </summary>
public static class ProblemCodes
{
    public const string TypePrefix = "urn:run-ledger:problem:";

    public const string MalformedJson = "malformed-json";
    public const string InvalidPayload = "invalid-payload";
    public const string PayloadTooLarge = "payload-too-large";
    public const string MissingCredentials = "missing-credentials";
    public const string InvalidCredentials = "invalid-credentials";
    public const string ForeignLease = "foreign-lease";
    public const string Forbidden = "forbidden";
    public const string RunNotFound = "run-not-found";
    public const string RunExists = "run-exists";
    public const string RunTerminal = "run-terminal";
    public const string RunNotClaimed = "run-not-claimed";
    public const string LeaseHeld = "lease-held";
    public const string LeaseExpired = "lease-expired";
    public const string LeaseLost = "lease-lost";
    public const string UnknownStep = "unknown-step";
    public const string ScoreConflict = "score-conflict";
    public const string UnknownScore = "unknown-score";
    public const string OutputConflict = "output-conflict";
    public const string ChunkConflict = "chunk-conflict";
    public const string Contention = "contention";
    public const string DatabaseUnavailable = "database-unavailable";
    public const string Internal = "internal-error";
    public const string NotFound = "not-found";
    public const string BatchNotFound = "batch-not-found";
    public const string BatchExists = "batch-exists";
}

/// <summary>RFC 9457 (7807) problem details, with the ledger's extension members.</summary>
public sealed record Problem
{
    public required string Type { get; init; }
    public required string Title { get; init; }
    /// <summary>The HTTP status code, as RFC 9457 defines the member.</summary>
    public required int Status { get; init; }
    public string? Detail { get; init; }
    public string? Instance { get; init; }
    /// <summary>The stable code, also the last segment of <see cref="Type"/>.</summary>
    public required string Code { get; init; }
    public required bool Retryable { get; init; }
    public string? RunId { get; init; }
    /// <summary>The run's status when the refusal was decided (the <c>status</c> member is the HTTP code).</summary>
    public RunStatus? RunStatus { get; init; }
    public IReadOnlyDictionary<string, string[]>? Errors { get; init; }
    public IReadOnlyList<string>? Allowed { get; init; }
    public IReadOnlyList<EventResult>? Results { get; init; }
    public string? EventId { get; init; }
    [JsonIgnore] public int? RetryAfterSeconds { get; init; }

    public static Problem Of(int httpStatus, string code, string title, string? detail = null, bool retryable = false,
        string? runId = null, RunStatus? runStatus = null) => new()
    {
        Type = ProblemCodes.TypePrefix + code,
        Code = code,
        Title = title,
        Status = httpStatus,
        Detail = detail,
        Retryable = retryable,
        RunId = runId,
        RunStatus = runStatus,
    };

    public IResult ToResult() => new ProblemResult(this);
}

internal sealed class ProblemResult(Problem problem) : IResult, IStatusCodeHttpResult
{
    public int? StatusCode => problem.Status;

    public async Task ExecuteAsync(HttpContext httpContext)
    {
        var response = httpContext.Response;
        response.StatusCode = problem.Status;
        response.ContentType = "application/problem+json";
        if (problem.RetryAfterSeconds is { } seconds)
        {
            response.Headers.RetryAfter = seconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        var withInstance = problem.Instance is null ? problem with { Instance = httpContext.Request.Path } : problem;
        await JsonSerializer.SerializeAsync(response.Body, withInstance, LedgerJson.Options, httpContext.RequestAborted);
    }
}

/// <summary>A refusal decided deep in a use case; endpoints turn it into a response.</summary>
public sealed class ProblemException(Problem problem) : Exception(problem.Detail ?? problem.Title)
{
    public Problem Problem { get; } = problem;
}
