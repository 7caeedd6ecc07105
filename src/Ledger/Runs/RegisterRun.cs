using FluentValidation;
using Ledger.Contract;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Ledger.Labels;
using Ledger.Leaderboards;
using Marten;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Wolverine.Http;

namespace Ledger.Runs;

public sealed record RegisterRun
{
    public string? RunId { get; init; }
    public string? Board { get; init; }
    public string? Participant { get; init; }
    public string? Batch { get; init; }
    public Dictionary<string, string>? Labels { get; init; }
    public List<string>? RequiredScores { get; init; }
    public List<string>? RequiredOutputs { get; init; }
    public long? ExpectedItems { get; init; }
    public int? LeaseSeconds { get; init; }

    public sealed class Validator : AbstractValidator<RegisterRun>
    {
        public Validator(IOptions<LedgerOptions> options, LabelVocabulary vocabulary)
        {
            RuleFor(r => r.RunId!).Matches(Identifiers.Pattern).WithMessage(Identifiers.Message).When(r => r.RunId is not null);
            RuleFor(r => r.RunId!).NotEqual(Identifiers.ReservedRunId, StringComparer.Ordinal)
                .WithMessage($"'{Identifiers.ReservedRunId}' is the event store's own stream; choose another run id.").When(r => r.RunId is not null);
            RuleFor(r => r.Board!).Matches(Identifiers.Pattern).WithMessage(Identifiers.Message).When(r => r.Board is not null);
            RuleFor(r => r.Participant).NotEmpty().MaximumLength(InputLimits.MaxName).Printable().When(r => r.Participant is not null);
            RuleFor(r => r.Participant).NotEmpty().When(r => r.Board is not null)
                .WithMessage("A run entered on a board needs its participant.");
            RuleFor(r => r.Batch!).Matches(Identifiers.Pattern).WithMessage(Identifiers.Message).When(r => r.Batch is not null);
            RuleFor(r => r.Labels!).Must(l => l.Count <= InputLimits.MaxLabels).WithMessage($"At most {InputLimits.MaxLabels} labels.")
                .Must(l => l.All(kv => kv.Key.Length is > 0 and <= InputLimits.MaxLabelKey && kv.Value is { Length: > 0 and <= InputLimits.MaxLabelValue }
                                        && InputText.IsIdentifier(kv.Key) && InputText.IsIdentifier(kv.Value)))
                .WithMessage($"Label keys must be 1-{InputLimits.MaxLabelKey} characters and values 1-{InputLimits.MaxLabelValue} characters, without control characters.")
                .Custom((labels, context) => vocabulary.Check(labels, "labels", context))
                .When(r => r.Labels is not null);
            RuleFor(r => r.RequiredScores!).Must(BeDistinctNames).WithMessage($"Required scores must be distinct non-empty names of at most {InputLimits.MaxName} characters (at most {InputLimits.MaxRequiredNames}).")
                .When(r => r.RequiredScores is not null);
            RuleFor(r => r.RequiredOutputs!).Must(BeDistinctNames).WithMessage($"Required outputs must be distinct non-empty names of at most {InputLimits.MaxName} characters (at most {InputLimits.MaxRequiredNames}).")
                .When(r => r.RequiredOutputs is not null);
            RuleFor(r => r.ExpectedItems).InclusiveBetween(0, InputRules.MaxCount).When(r => r.ExpectedItems is not null);
            RuleFor(r => r.LeaseSeconds).InclusiveBetween(1, options.Value.MaxLeaseSeconds).When(r => r.LeaseSeconds is not null);
        }

        private static bool BeDistinctNames(List<string> names) =>
            names.Count <= InputLimits.MaxRequiredNames && names.All(n => n is { Length: > 0 and <= InputLimits.MaxName } && InputText.IsIdentifier(n)) && names.Distinct(StringComparer.Ordinal).Count() == names.Count;
    }
}

public sealed record RunRegisteredResponse(string RunId, RunStatus Status, int LeaseSeconds);

public static class RegisterRunEndpoint
{
    [WolverinePost("/api/runs", Name = "RegisterRun")]
    [JsonBody(typeof(RegisterRun))]
    [Accepts(Credential.AdminKey)]
    [Refuses(ProblemCodes.RunExists)]
    [Tags("Runs")]
    [EndpointSummary("Register a run (admin key)")]
    [ProducesResponseType<RunRegisteredResponse>(201)]
    public static async Task<IResult> Post(HttpContext context, RequestGate gate, RejectionLog rejections,
        IValidator<RegisterRun> validator, IDocumentStore store, BoardCatalog boards, IOptions<LedgerOptions> options, TimeProvider clock,
        LabelVocabulary vocabulary)
    {
        var admission = await gate.Admit<RegisterRun>(context, validator, [Role.Admin]);
        if (admission.Refusal is not null) return admission.Refusal;
        var request = admission.Request!;

        await using var session = store.LightweightSession();
        Ranking? ranking = null;
        if (request.Board is { } boardId)
        {
            var board = await boards.Find(boardId, context.RequestAborted);
            if (board is null)
            {
                return await rejections.Refuse(context, RequestBody.Invalid(new Dictionary<string, string[]>
                {
                    ["board"] = [$"No board '{boardId}' is defined; define it with POST /api/boards first."],
                }), admission.Raw);
            }
            ranking = board.Ranking;
        }

        var runId = request.RunId ?? Guid.CreateVersion7().ToString();
        // A run entered on a board cannot succeed without the scores the board ranks by.
        var requiredScores = (request.RequiredScores ?? [])
            .Concat(ranking is null ? [] : new[] { ranking.PrimaryScore })
            .Concat(ranking?.TieBreakScore is { } tieBreak ? new[] { tieBreak } : [])
            .Distinct(StringComparer.Ordinal)
            .ToList();
        var sent = request.Labels ?? new Dictionary<string, string>();
        var labels = vocabulary.NormalizeLeniently(sent);
        var registered = new RunRegistered(
            runId,
            request.Board,
            request.Participant,
            request.Batch,
            labels,
            requiredScores,
            request.RequiredOutputs ?? [],
            request.ExpectedItems,
            request.LeaseSeconds ?? options.Value.DefaultLeaseSeconds,
            clock.GetUtcNow(),
            ranking,
            // Kept only when normalization changed something, so the stream shows what the caller said.
            labels.Any(kv => sent[kv.Key] != kv.Value) ? sent : null);

        session.Events.StartStream<Run>(runId, registered);
        new KpiDelta().Run(null, Run.Create(registered)).Queue(session, options.Value.SchemaName);
        try
        {
            await session.SaveAsync(context.RequestAborted);
        }
        catch (Exception e) when (IsStreamCollision(e))
        {
            // A retry of the same registration (its answer was lost) is answered as the first time.
            if (request.RunId is not null && await Existing(store, runId, context.RequestAborted) is { } existing
                && SameDefinition(existing, registered))
            {
                return Created(existing);
            }
            return await rejections.Refuse(context, Problem.Of(ProblemCodes.RunExists,
                $"A run with id '{runId}' is already registered with another definition; read it with GET /api/runs/{runId}.", runId: runId), admission.Raw);
        }

        return Created(registered);
    }

    private static IResult Created(RunRegistered registered)
    {
        var response = new RunRegisteredResponse(registered.RunId, RunStatus.Registered, registered.LeaseSeconds);
        return new WithLocation(Results.Json(response, LedgerJson.Options, statusCode: 201),
            $"/api/runs/{Uri.EscapeDataString(registered.RunId)}");
    }

    private sealed class WithLocation(IResult inner, string location) : IResult
    {
        public Task ExecuteAsync(HttpContext httpContext)
        {
            httpContext.Response.Headers.Location = location;
            return inner.ExecuteAsync(httpContext);
        }
    }

    private static async Task<RunRegistered?> Existing(IDocumentStore store, string runId, CancellationToken ct)
    {
        await using var query = store.QuerySession();
        var events = await query.Events.FetchStreamAsync(runId, version: 1, token: ct);
        return events.Select(e => e.Data).OfType<RunRegistered>().FirstOrDefault();
    }

    /// <summary>What the run was registered as: everything but the time of registration and how labels were spelled.</summary>
    private static bool SameDefinition(RunRegistered a, RunRegistered b) =>
        a.Board == b.Board && a.Participant == b.Participant && a.Batch == b.Batch
        && a.ExpectedItems == b.ExpectedItems && a.LeaseSeconds == b.LeaseSeconds
        && a.Labels.Count == b.Labels.Count && a.Labels.All(kv => b.Labels.TryGetValue(kv.Key, out var v) && v == kv.Value)
        && a.RequiredScores.ToHashSet(StringComparer.Ordinal).SetEquals(b.RequiredScores)
        && a.RequiredOutputs.ToHashSet(StringComparer.Ordinal).SetEquals(b.RequiredOutputs);

    private static bool IsStreamCollision(Exception e) => e switch
    {
        JasperFx.Events.ExistingStreamIdCollisionException or Marten.Exceptions.ExistingStreamIdCollisionException => true,
        Npgsql.PostgresException { SqlState: Npgsql.PostgresErrorCodes.UniqueViolation } p when p.TableName?.Contains("streams") == true => true,
        _ when e.InnerException is not null => IsStreamCollision(e.InnerException),
        _ => false,
    };
}

public static class Identifiers
{
    public const string Pattern = "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$";
    public const string Message = "Must be 1-128 characters of letters, digits and . _ : @ -, starting with a letter or digit.";

    /// <summary>
    /// The stream key Marten keeps for tombstone events (the sequence numbers a failed transaction
    /// drew): a run of that id would share its stream with them.
    /// </summary>
    public static readonly string ReservedRunId = JasperFx.StorageConstants.TombstoneStreamKey;
}
