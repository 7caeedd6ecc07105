using System.Text.Json;
using FluentValidation;
using Ledger.Contract;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Ledger.Infrastructure.OpenApi;
using Marten;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Wolverine.Http;

namespace Ledger.Runs;

/// <summary>One worker event as it arrives on the wire: the union of every type's fields.</summary>
public sealed record WorkerEventRequest
{
    public string? Type { get; init; }
    public string? EventId { get; init; }
    public DateTimeOffset? OccurredAt { get; init; }
    public string? StepId { get; init; }
    public string? Name { get; init; }
    public string? Outcome { get; init; }
    public List<string>? Lines { get; init; }
    public Dictionary<string, double>? Scores { get; init; }
    public string? Uri { get; init; }
    public string? Sha256 { get; init; }
    public long? Bytes { get; init; }
    public string? ChunkId { get; init; }
    public long? Count { get; init; }
    public long? ItemsTotal { get; init; }
    public List<string>? Warnings { get; init; }
    public string? ErrorClass { get; init; }
    public string? Message { get; init; }

    public WorkerEvent ToEvent(DateTimeOffset recordedAt)
    {
        var eventId = EventId!;
        var occurredAt = OccurredAt!.Value;
        return Type switch
        {
            WorkerEventTypes.RunStarted => new RunStarted { EventId = eventId, OccurredAt = occurredAt, RecordedAt = recordedAt },
            WorkerEventTypes.StepStarted => new StepStarted { EventId = eventId, OccurredAt = occurredAt, RecordedAt = recordedAt, StepId = StepId!, Name = Name },
            WorkerEventTypes.StepCompleted => new StepCompleted { EventId = eventId, OccurredAt = occurredAt, RecordedAt = recordedAt, StepId = StepId!, Outcome = Outcome },
            WorkerEventTypes.Heartbeat => new HeartbeatReceived { EventId = eventId, OccurredAt = occurredAt, RecordedAt = recordedAt },
            WorkerEventTypes.Log => new LogWritten { EventId = eventId, OccurredAt = occurredAt, RecordedAt = recordedAt, Lines = Lines! },
            WorkerEventTypes.ScoresReported => new ScoresReported { EventId = eventId, OccurredAt = occurredAt, RecordedAt = recordedAt, Scores = Scores! },
            WorkerEventTypes.OutputRecorded => new OutputRecorded { EventId = eventId, OccurredAt = occurredAt, RecordedAt = recordedAt, Name = Name!, Uri = Uri!, Sha256 = Sha256?.ToLowerInvariant(), Bytes = Bytes },
            WorkerEventTypes.ItemsCommitted => new ItemsCommitted { EventId = eventId, OccurredAt = occurredAt, RecordedAt = recordedAt, ChunkId = ChunkId!, Count = Count!.Value },
            WorkerEventTypes.RunCompleted => new RunCompleted { EventId = eventId, OccurredAt = occurredAt, RecordedAt = recordedAt, ItemsTotal = ItemsTotal, Warnings = Warnings },
            WorkerEventTypes.RunFailed => new RunFailed { EventId = eventId, OccurredAt = occurredAt, RecordedAt = recordedAt, ErrorClass = ErrorClass!, Message = Message },
            _ => throw new InvalidOperationException($"unvalidated event type {Type}"),
        };
    }

    public sealed class Validator : AbstractValidator<WorkerEventRequest>
    {
        public const int MaxLines = 1000;
        public const int MaxLineLength = 16 * 1024;
        public const int MaxText = 8 * 1024;
        public const int MaxWarnings = 20;
        public const string WarningPattern = "^[a-z0-9][a-z0-9._-]{0,63}$";
        public const int MaxId = 200;
        public const int MaxOutcome = 64;
        public const int MaxScores = 100;
        public const int MaxUri = 2048;
        public const string Sha256Pattern = "^[0-9a-fA-F]{64}$";

        public Validator()
        {
            RuleFor(e => e.Type).NotEmpty()
                .Must(t => t is null || WorkerEventTypes.All.Contains(t))
                .WithMessage($"Unknown event type; allowed: {string.Join(", ", WorkerEventTypes.All)}.");
            RuleFor(e => e.EventId).NotEmpty().MaximumLength(MaxId).Printable();
            RuleFor(e => e.OccurredAt).NotNull();

            When(e => e.Type is WorkerEventTypes.StepStarted or WorkerEventTypes.StepCompleted, () =>
            {
                RuleFor(e => e.StepId).NotEmpty().WithMessage("A step event needs its stepId.").MaximumLength(MaxId).Printable();
            });
            When(e => e.Type == WorkerEventTypes.StepStarted, () => RuleFor(e => e.Name).MaximumLength(MaxId).Printable());
            When(e => e.Type == WorkerEventTypes.StepCompleted, () => RuleFor(e => e.Outcome).MaximumLength(MaxOutcome));
            When(e => e.Type == WorkerEventTypes.Log, () =>
            {
                RuleFor(e => e.Lines).NotNull();
                RuleFor(e => e.Lines!.Count).LessThanOrEqualTo(MaxLines).OverridePropertyName("lines").When(e => e.Lines is not null);
                RuleForEach(e => e.Lines).NotNull().MaximumLength(MaxLineLength);
            });
            When(e => e.Type == WorkerEventTypes.ScoresReported, () =>
            {
                RuleFor(e => e.Scores).NotEmpty().WithMessage("scores.reported needs at least one score.");
                RuleFor(e => e.Scores!.Count).LessThanOrEqualTo(MaxScores).OverridePropertyName("scores").When(e => e.Scores is not null);
                RuleFor(e => e.Scores).Custom((scores, context) =>
                {
                    foreach (var (name, value) in scores ?? [])
                    {
                        if (name.Length is 0 or > InputLimits.MaxName || !InputText.IsIdentifier(name)) context.AddFailure("scores", $"Score names must be 1-{InputLimits.MaxName} characters, without control characters.");
                        else if (!double.IsFinite(value)) context.AddFailure($"scores.{name}", "Scores must be finite numbers.");
                    }
                });
            });
            When(e => e.Type == WorkerEventTypes.OutputRecorded, () =>
            {
                RuleFor(e => e.Name).NotEmpty().MaximumLength(MaxId).Printable();
                RuleFor(e => e.Uri).NotEmpty().MaximumLength(MaxUri)
                    .Must(u => System.Uri.TryCreate(u, UriKind.Absolute, out _)).WithMessage("The uri must be absolute.");
                RuleFor(e => e.Sha256).Matches(Sha256Pattern).When(e => e.Sha256 is not null)
                    .WithMessage("sha256 must be 64 hexadecimal characters.");
                RuleFor(e => e.Bytes).InclusiveBetween(0, InputRules.MaxCount).When(e => e.Bytes is not null);
            });
            When(e => e.Type == WorkerEventTypes.ItemsCommitted, () =>
            {
                RuleFor(e => e.ChunkId).NotEmpty().MaximumLength(MaxId).Printable();
                RuleFor(e => e.Count).NotNull().InclusiveBetween(0, InputRules.MaxCount);
            });
            When(e => e.Type == WorkerEventTypes.RunCompleted, () =>
            {
                RuleFor(e => e.ItemsTotal).InclusiveBetween(0, InputRules.MaxCount).When(e => e.ItemsTotal is not null);
                RuleFor(e => e.Warnings!.Count).LessThanOrEqualTo(MaxWarnings).OverridePropertyName("warnings").When(e => e.Warnings is not null);
                RuleForEach(e => e.Warnings).NotEmpty().Matches(WarningPattern)
                    .WithMessage("A warning is a short code: 1-64 lower-case letters, digits and . _ -, e.g. empty-output.");
            });
            When(e => e.Type == WorkerEventTypes.RunFailed, () =>
            {
                RuleFor(e => e.ErrorClass).NotEmpty()
                    .Must(c => c is null || ErrorClasses.All.Contains(c))
                    .WithMessage($"Unknown errorClass; allowed: {string.Join(", ", ErrorClasses.All)}.")
                    .WithState(_ => new RequestBody.AllowedValues(ErrorClasses.All));
                RuleFor(e => e.Message).MaximumLength(MaxText);
            });
        }
    }
}

public sealed record EventsRecorded(string RunId, RunStatus Status, IReadOnlyList<EventResult> Results) : IAnswer;

public static class RecordEventsEndpoint
{
    [WolverinePost("/api/runs/{id}/events", Name = "RecordEvents")]
    [JsonBody(typeof(WorkerEventRequest))]
    [Accepts(Credential.LeaseToken)]
    [Refuses(ProblemCodes.RunNotFound, ProblemCodes.RunTerminal, ProblemCodes.LeaseExpired, ProblemCodes.LeaseLost, ProblemCodes.UnknownStep, ProblemCodes.ScoreConflict, ProblemCodes.UnknownScore, ProblemCodes.OutputConflict, ProblemCodes.ChunkConflict, Contended = true)]
    [Tags("Runs")]
    [EndpointSummary("Report one worker event or an ordered array of them (lease token)")]
    [ProducesResponseType<EventsRecorded>(200)]
    public static async Task<IResult> Post(string id, HttpContext context, RejectionLog rejections,
        IValidator<WorkerEventRequest> validator, RunWriter writer, LeaseTokens leases, RequestGate gate,
        IOptions<LedgerOptions> options, IOptions<LateEventPolicy> lateEvents)
    {
        using var validating = Ledger.Operations.LedgerTracing.Step("ledger.events.validate", id);
        // Who is asking comes first: nothing of the body is read or judged for an unknown token.
        var (tokenHash, denied) = await leases.Authenticate(context, id);
        if (denied is not null) return await rejections.Refuse(context, denied with { RunId = id });

        var body = await RequestBody.ReadJsonAsync(context, options.Value.MaxPayloadBytes);
        if (body.Problem is not null) return await rejections.Refuse(context, await gate.OnRun(body.Problem, id), body.Raw);

        var (requests, invalid) = Parse(body.Json!.Value, validator, options.Value.MaxEventsPerRequest);
        if (invalid is not null) return await rejections.Refuse(context, await gate.OnRun(invalid, id), body.Raw);
        validating?.SetTag("ledger.events", requests!.Count);
        validating?.Dispose();

        // Stamped with the time of the decision by the decider.
        var events = requests!.Select(r => r.ToEvent(default)).ToList();
        var decision = await writer.Submit(new RecordEventsCommand(id, tokenHash!, events) { Late = lateEvents.Value });
        return await decision.ToHttp(context, rejections, id, body.Raw, decision.After?.Worker);
    }

    /// <summary>One event object or an ordered array of them; every one must be valid or none is taken.</summary>
    private static (List<WorkerEventRequest>? Requests, Problem? Problem) Parse(JsonElement json,
        IValidator<WorkerEventRequest> validator, int maxEvents)
    {
        var elements = json.ValueKind switch
        {
            JsonValueKind.Array => json.EnumerateArray().ToList(),
            JsonValueKind.Object => [json],
            _ => null,
        };
        if (elements is null)
        {
            return (null, RequestBody.Invalid(new Dictionary<string, string[]> { ["$"] = ["Send one event object or an array of events."] }));
        }
        if (elements.Count == 0 || elements.Count > maxEvents)
        {
            return (null, RequestBody.Invalid(new Dictionary<string, string[]> { ["$"] = [$"Send between 1 and {maxEvents} events."] }));
        }

        var isArray = json.ValueKind == JsonValueKind.Array;
        var requests = new List<WorkerEventRequest>(elements.Count);
        var errors = new Dictionary<string, string[]>();
        IReadOnlyList<string>? allowed = null;
        for (var i = 0; i < elements.Count; i++)
        {
            var prefix = isArray ? $"[{i}]." : "";
            var (request, problem) = RequestBody.Bind<WorkerEventRequest>(elements[i], prefix);
            if (problem is not null)
            {
                foreach (var (key, value) in problem.Errors!) errors[key] = value;
                continue;
            }
            var validation = validator.Validate(request!);
            if (!validation.IsValid)
            {
                var invalid = RequestBody.Invalid(validation.Errors, prefix);
                foreach (var (key, value) in invalid.Errors!) errors[key] = value;
                allowed ??= invalid.Allowed;
                continue;
            }
            requests.Add(request!);
        }

        return errors.Count > 0
            ? (null, RequestBody.Invalid(errors, "Fix the listed events; no event of this request was recorded, and resending it unchanged will be refused again.") with { Allowed = allowed })
            : (requests, null);
    }
}
