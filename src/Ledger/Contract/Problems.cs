using System.Text.Json.Serialization;

namespace Ledger.Contract;

/// <summary>
/// The stable codes of the refusals. A code never changes meaning once published: clients
/// match on <see cref="Problem.Type"/> and decide from <c>retryable</c> whether to try again.
/// What each one means, its HTTP status and whether it is retryable live in <see cref="ProblemCatalogue"/>.
/// </summary>
public static class ProblemCodes
{
    public const string TypePrefix = "urn:run-ledger:problem:";

    public const string MalformedJson = "malformed-json";
    public const string InvalidPayload = "invalid-payload";
    public const string PayloadTooLarge = "payload-too-large";
    public const string UnsupportedMediaType = "unsupported-media-type";
    public const string MissingCredentials = "missing-credentials";
    public const string InvalidCredentials = "invalid-credentials";
    public const string ForeignLease = "foreign-lease";
    public const string Forbidden = "forbidden";
    public const string NotFound = "not-found";
    public const string MethodNotAllowed = "method-not-allowed";
    public const string RunNotFound = "run-not-found";
    public const string StateNotFound = "state-not-found";
    public const string BoardNotFound = "board-not-found";
    public const string BatchNotFound = "batch-not-found";
    public const string SubscriptionNotFound = "subscription-not-found";
    public const string SubscriptionLimit = "subscription-limit";
    public const string RunExists = "run-exists";
    public const string BoardExists = "board-exists";
    public const string BatchExists = "batch-exists";
    public const string RunTerminal = "run-terminal";
    public const string RunNotTerminal = "run-not-terminal";
    public const string ReclassifyNoChange = "reclassify-no-change";
    public const string IncompleteResults = "incomplete-results";
    public const string LeaseHeld = "lease-held";
    public const string LeaseExpired = "lease-expired";
    public const string LeaseLost = "lease-lost";
    public const string UnknownStep = "unknown-step";
    public const string ScoreConflict = "score-conflict";
    public const string UnknownScore = "unknown-score";
    public const string OutputConflict = "output-conflict";
    public const string ChunkConflict = "chunk-conflict";
    public const string RunArchived = "run-archived";
    public const string RunNotArchived = "run-not-archived";
    public const string ArchiveCorrupt = "archive-corrupt";
    public const string Contention = "contention";
    public const string DatabaseUnavailable = "database-unavailable";
    public const string Overloaded = "overloaded";
    public const string TooManyWrongKeys = "too-many-wrong-keys";
    public const string Internal = "internal-error";
}

/// <summary>One kind of refusal: its code, HTTP status, whether a retry can succeed, and what it means.</summary>
public sealed record ProblemType(string Code, int Status, bool Retryable, string Title, string Meaning)
{
    public string Type => ProblemCodes.TypePrefix + Code;
}

/// <summary>
/// Every refusal the ledger answers, in one place: endpoints take status and retryability from
/// here, docs/problems.md is rendered from it, and a test proves each one reachable.
/// </summary>
public static class ProblemCatalogue
{
    public static readonly IReadOnlyList<ProblemType> All =
    [
        new(ProblemCodes.MalformedJson, 400, false, "The request body is not valid JSON",
            "The body is empty, is not JSON, is not UTF-8, nests deeper than 32 levels, or could not be read."),
        new(ProblemCodes.InvalidPayload, 422, false, "The request is invalid",
            "A field of the body, the query or the path is missing, of the wrong type, out of range, or holds a character the ledger cannot store (NUL, a lone surrogate, a control character in an identifier). `errors` names each field; `allowed` lists the values of a closed vocabulary."),
        new(ProblemCodes.PayloadTooLarge, 413, false, "The request body is too large",
            "The body exceeds `Ledger:MaxPayloadBytes`; split it into smaller requests."),
        new(ProblemCodes.UnsupportedMediaType, 415, false, "The body must be JSON",
            "A body was sent with a content type other than `application/json`."),
        new(ProblemCodes.MissingCredentials, 401, false, "Credentials are required",
            "No `Authorization: Bearer ...` header. Says nothing about the run."),
        new(ProblemCodes.InvalidCredentials, 401, false, "The credentials are not recognised",
            "The key or lease token is not one this ledger issued. The same answer whether or not the run exists."),
        new(ProblemCodes.ForeignLease, 403, false, "The lease token belongs to another run",
            "A lease token of another run was sent. Says nothing about this run."),
        new(ProblemCodes.Forbidden, 403, false, "This key may not make this call",
            "The key is valid but its role (admin, worker, read) does not allow this call."),
        new(ProblemCodes.NotFound, 404, false, "No such endpoint",
            "The path is not part of the API."),
        new(ProblemCodes.MethodNotAllowed, 405, false, "The method is not allowed here",
            "The path exists but not with this method; `allowed` and the Allow header list the methods."),
        new(ProblemCodes.RunNotFound, 404, false, "No such run",
            "No run with this id is registered."),
        new(ProblemCodes.StateNotFound, 404, false, "The run had no such state",
            "Time travel asked for a version past the stream's end or a time before the run was registered."),
        new(ProblemCodes.BoardNotFound, 404, false, "No such board",
            "No board with this id is defined."),
        new(ProblemCodes.BatchNotFound, 404, false, "No such batch",
            "No batch with this id is defined."),
        new(ProblemCodes.SubscriptionNotFound, 404, false, "No such webhook subscription",
            "No webhook subscription with this id exists (it may have been deleted)."),
        new(ProblemCodes.SubscriptionLimit, 409, false, "The ledger holds as many webhook subscriptions as it may",
            "`Ledger:Webhooks:MaxSubscriptions` subscriptions exist; delete one first (or raise the setting)."),
        new(ProblemCodes.RunExists, 409, false, "The run exists with another definition",
            "A registration reused a run id with a different definition (the same definition again is answered as the first time)."),
        new(ProblemCodes.BoardExists, 409, false, "The board exists with another ranking",
            "Boards are immutable: a different definition under an existing id is refused."),
        new(ProblemCodes.BatchExists, 409, false, "The batch exists with another definition",
            "Batches are immutable: a different definition under an existing id is refused."),
        new(ProblemCodes.RunTerminal, 409, false, "The run is already finished",
            $"The run is over ({RunStatusSets.TerminalInWords}); no worker event changes it. Late events are still recorded (see `results`). Stop working on it."),
        new(ProblemCodes.RunNotTerminal, 409, false, "Only a terminal verdict can be reclassified",
            "Reclassification overrules a verdict; the run has none yet."),
        new(ProblemCodes.ReclassifyNoChange, 409, false, "The run already has this status",
            "A reclassification must change the status."),
        new(ProblemCodes.IncompleteResults, 409, false, "A run cannot succeed without its results",
            "A reclassification to succeeded was asked for a run whose required results are missing or whose item counts do not balance."),
        new(ProblemCodes.LeaseHeld, 409, false, "The run is leased to another worker",
            "A claim while another lease is live. The same `claimId` from the same worker is not refused: it is answered with the lease it got."),
        new(ProblemCodes.LeaseExpired, 409, false, "The lease has expired",
            "The lease ran out; the worker must stop."),
        new(ProblemCodes.LeaseLost, 409, false, "The lease was taken over",
            "The run was claimed again after this lease; the worker must stop."),
        new(ProblemCodes.UnknownStep, 409, false, "The step was never started",
            "step.completed for a step id this run never started."),
        new(ProblemCodes.ScoreConflict, 409, false, "The score is already recorded with another value",
            "Scores are immutable: the same name with another value is refused."),
        new(ProblemCodes.UnknownScore, 422, false, "The score is not one the run declared",
            "The run declares its scores and this one is not among them."),
        new(ProblemCodes.OutputConflict, 409, false, "The output is already recorded differently",
            "An output name was recorded again with another uri or digest."),
        new(ProblemCodes.ChunkConflict, 409, false, "The chunk is already committed with another count",
            "A chunk id was committed again with another count."),
        new(ProblemCodes.RunArchived, 409, false, "The run's history is archived and the archive cannot be read",
            "The run's events left PostgreSQL for an archive (`Ledger:Retention`) that this node cannot read now (the directory is not mounted or set, or the file is missing or damaged). The run itself is still answered. `POST /api/runs/{id}/restore` puts the events back once the archive is readable."),
        new(ProblemCodes.RunNotArchived, 409, false, "The run is not archived",
            "A restore was asked for a run whose events are all in PostgreSQL."),
        new(ProblemCodes.ArchiveCorrupt, 409, false, "The archive is damaged",
            "The run's archive is missing, or its manifest, digest or hash chain is not what was recorded when it was archived; `detail` names the first bad event when it can. Nothing was changed. `verify` reports every damaged archive."),
        new(ProblemCodes.Contention, 503, true, "The run is being changed by other requests",
            "The run stayed contended through every attempt; nothing from this request was recorded. Retry after the Retry-After delay."),
        new(ProblemCodes.DatabaseUnavailable, 503, true, "The ledger's database is unavailable",
            "The database could not be reached or failed during the commit. When the commit was under way the request may have been recorded: resending the same request (the same eventId) is safe."),
        new(ProblemCodes.Overloaded, 503, true, "The ledger cannot take more writes right now",
            "The queue in front of the run writer is full, or the ledger is shutting down; nothing from this request was recorded. Retry after the Retry-After delay (on another node, if there is one)."),
        new(ProblemCodes.TooManyWrongKeys, 429, true, "Too many wrong keys from this address",
            "The client address sent more keys or lease tokens the ledger does not know than `Ledger:WrongKeys:Limit` allows per window; every `/api` request from it is refused until the Retry-After delay has passed. Requests with valid credentials never count."),
        new(ProblemCodes.Internal, 500, true, "The ledger failed unexpectedly",
            "A defect in the ledger, not in the request; it is logged."),
    ];

    private static readonly Dictionary<string, ProblemType> ByCode = All.ToDictionary(p => p.Code, StringComparer.Ordinal);

    public static ProblemType Get(string code) =>
        ByCode.TryGetValue(code, out var type) ? type : throw new ArgumentException($"'{code}' is not in the problem catalogue", nameof(code));

    public static bool Contains(string code) => ByCode.ContainsKey(code);

    /// <summary>The catalogue as the Markdown table that docs/problems.md holds.</summary>
    public static string RenderMarkdown()
    {
        var text = new System.Text.StringBuilder();
        text.Append("| type | status | retryable | meaning |\n|---|---|---|---|\n");
        foreach (var p in All)
        {
            text.Append($"| `{p.Code}` | {p.Status} | {(p.Retryable ? "yes" : "no")} | {p.Meaning} |\n");
        }
        return text.ToString();
    }
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

    /// <summary>
    /// A refusal of a catalogued type: its title, status and retryability come from <see cref="ProblemCatalogue"/>
    /// (a title is the type's, the same on every answer; what this occurrence adds goes in <paramref name="detail"/>).
    /// </summary>
    public static Problem Of(string code, string? detail = null, string? runId = null, RunStatus? runStatus = null)
    {
        var type = ProblemCatalogue.Get(code);
        return new Problem
        {
            Type = type.Type,
            Code = code,
            Title = type.Title,
            Status = type.Status,
            Detail = detail,
            Retryable = type.Retryable,
            RunId = runId,
            RunStatus = runStatus,
        };
    }
}
