using System.Linq.Expressions;
using FluentValidation;
using Ledger.Infrastructure;

namespace Ledger.Runs;

// The one table of worker event types. Adding a type touches three files of src/Ledger: the event
// in RunEvents.cs, its row here (wire name, fields with their limits, how the event is made, and
// any new wire member in WorkerEventRequest), and its Apply in Run.cs. Everything else reads this
// table: the validator below, the API description (OpenApi/RequestSchemas.cs), the
// names the history shows (EventNames), Marten's event types (RunsConfiguration) and the fold
// revision of the stored snapshots (RunSnapshotStore).

/// <summary>The wire names of worker events, as the HTTP contract pins them.</summary>
public static class WorkerEventTypes
{
    public const string RunStarted = "run.started";
    public const string StepStarted = "step.started";
    public const string StepCompleted = "step.completed";
    public const string Heartbeat = "heartbeat";
    public const string Log = "log";
    public const string ScoresReported = "scores.reported";
    public const string OutputRecorded = "output.recorded";
    public const string ItemsCommitted = "items.committed";
    public const string RunCompleted = "run.completed";
    public const string RunFailed = "run.failed";

    /// <summary>Every wire name, in the table's order.</summary>
    public static IReadOnlyList<string> All => WorkerEventCatalogue.Default.WireNames;
}

/// <summary>What every worker event carries besides its own fields: the client's key and time, the ledger's time.</summary>
public readonly record struct EventStamp(string EventId, DateTimeOffset OccurredAt, DateTimeOffset RecordedAt);

/// <summary>
/// One row of the table: the wire name, the event's type, its schema's name and description in the
/// API description, its own fields (beyond <c>type</c>, <c>eventId</c> and <c>occurredAt</c>), in
/// the order they are checked and described, and how the event is made from a valid request.
/// </summary>
public sealed record WorkerEventType(
    string Wire,
    Type Event,
    string Schema,
    string Description,
    IReadOnlyList<WireField> Fields,
    Func<WorkerEventRequest, EventStamp, WorkerEvent> Create);

/// <summary>
/// A field of a worker event on the wire, one of a closed set of kinds. Each kind is checked by the
/// validator and described in the API description from the same values, so a limit is written once.
/// </summary>
public abstract record WireField(string Name, bool Required, string? Description);

/// <summary>Text of at most <paramref name="MaxLength"/> characters; <paramref name="Printable"/> refuses control characters.</summary>
public sealed record TextField(string Name, Expression<Func<WorkerEventRequest, string?>> Member, bool Required, int MaxLength,
    bool Printable, string? Description, string? MissingMessage = null) : WireField(Name, Required, Description);

/// <summary>A count: a whole number from 0 to <see cref="InputRules.MaxCount"/>.</summary>
public sealed record CountField(string Name, Expression<Func<WorkerEventRequest, long?>> Member, bool Required, string Description)
    : WireField(Name, Required, Description);

/// <summary>Lines of text: at most <paramref name="MaxItems"/>, each at most <paramref name="MaxLength"/> characters.</summary>
public sealed record LinesField(string Name, Expression<Func<WorkerEventRequest, IEnumerable<string>?>> Member, int MaxItems, int MaxLength)
    : WireField(Name, Required: true, Description: null);

/// <summary>Numbers by name: at least one, at most <paramref name="MaxItems"/>, names 1-<see cref="InputLimits.MaxName"/> characters, values finite.</summary>
public sealed record NumbersByNameField(string Name, Expression<Func<WorkerEventRequest, IReadOnlyDictionary<string, double>?>> Member, int MaxItems,
    string Description, string MissingMessage) : WireField(Name, Required: true, Description);

/// <summary>An absolute URI of at most <paramref name="MaxLength"/> characters.</summary>
public sealed record UriField(string Name, Expression<Func<WorkerEventRequest, string?>> Member, int MaxLength, string Description)
    : WireField(Name, Required: true, Description);

/// <summary>Text matching <paramref name="Pattern"/>, when sent.</summary>
public sealed record PatternField(string Name, Expression<Func<WorkerEventRequest, string?>> Member, string Pattern, string Description, string Message)
    : WireField(Name, Required: false, Description);

/// <summary>Short codes, each matching <paramref name="Pattern"/>, at most <paramref name="MaxItems"/>, when sent.</summary>
public sealed record CodesField(string Name, Expression<Func<WorkerEventRequest, IEnumerable<string>?>> Member, int MaxItems, string Pattern,
    string Description, string Message) : WireField(Name, Required: false, Description);

/// <summary>One of <paramref name="Allowed"/>; a refusal lists them (<see cref="RequestBody.AllowedValues"/>).</summary>
public sealed record ChoiceField(string Name, Expression<Func<WorkerEventRequest, string?>> Member, IReadOnlyList<string> Allowed, string Description)
    : WireField(Name, Required: true, Description);

/// <summary>The table of worker event types (<see cref="Default"/>: the ledger's own).</summary>
public sealed class WorkerEventCatalogue
{
    /// <summary>
    /// Which fold the stored snapshots are of (<see cref="RunSnapshotStore"/>). Bump it with a row or an
    /// Apply that changes what a stream folds to (an Apply method, a new member of <see cref="Run"/> or of
    /// what it holds): snapshots of another revision are ignored and refilled.
    /// <c>RunSnapshotTests.the_fold_revision_names_the_fold</c> fails until it is.
    /// </summary>
    public const int FoldRevision = 2;

    private const int MaxId = WorkerEventRequest.Validator.MaxId;

    public static readonly WorkerEventCatalogue Default = new(
    [
        new(WorkerEventTypes.RunStarted, typeof(RunStarted), "RunStartedEvent", "The worker started the run.", [],
            (_, s) => new RunStarted { EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt }),
        new(WorkerEventTypes.StepStarted, typeof(StepStarted), "StepStartedEvent", "A step began; it must complete before the run can succeed.",
            [
                new TextField("stepId", e => e.StepId, true, MaxId, true, "The step's id; a step event without it is refused (422).", "A step event needs its stepId."),
                new TextField("name", e => e.Name, false, MaxId, true, "A readable name for the step."),
            ],
            (r, s) => new StepStarted { EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt, StepId = r.StepId!, Name = r.Name }),
        new(WorkerEventTypes.StepCompleted, typeof(StepCompleted), "StepCompletedEvent", "A started step finished; a step id never started is refused (409 `unknown-step`).",
            [
                new TextField("stepId", e => e.StepId, true, MaxId, true, "The id of a started step.", "A step event needs its stepId."),
                new TextField("outcome", e => e.Outcome, false, WorkerEventRequest.Validator.MaxOutcome, false, "How the step ended, e.g. `ok`."),
            ],
            (r, s) => new StepCompleted { EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt, StepId = r.StepId!, Outcome = r.Outcome }),
        new(WorkerEventTypes.Heartbeat, typeof(HeartbeatReceived), "HeartbeatEvent", "The worker is alive: extends the lease.", [],
            (_, s) => new HeartbeatReceived { EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt }),
        new(WorkerEventTypes.Log, typeof(LogWritten), "LogEvent", "Log lines of the run.",
            [new LinesField("lines", e => e.Lines, WorkerEventRequest.Validator.MaxLines, WorkerEventRequest.Validator.MaxLineLength)],
            (r, s) => new LogWritten { EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt, Lines = r.Lines! }),
        new(WorkerEventTypes.ScoresReported, typeof(ScoresReported), "ScoresReportedEvent", "Scores by name; immutable (another value for a recorded name is 409 `score-conflict`).",
            [
                new NumbersByNameField("scores", e => e.Scores, WorkerEventRequest.Validator.MaxScores,
                    "Score name to value (finite numbers); a run that declares its scores refuses others (422 `unknown-score`).",
                    "scores.reported needs at least one score."),
            ],
            (r, s) => new ScoresReported { EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt, Scores = r.Scores! }),
        new(WorkerEventTypes.OutputRecorded, typeof(OutputRecorded), "OutputRecordedEvent", "An output of the run; `bytes: 0` adds the `empty-output` warning.",
            [
                new TextField("name", e => e.Name, true, MaxId, true, "The output's name, e.g. one of the run's requiredOutputs."),
                new UriField("uri", e => e.Uri, WorkerEventRequest.Validator.MaxUri, "Where the output is (absolute)."),
                new PatternField("sha256", e => e.Sha256, WorkerEventRequest.Validator.Sha256Pattern, "The content's SHA-256, hexadecimal.",
                    "sha256 must be 64 hexadecimal characters."),
                new CountField("bytes", e => e.Bytes, false, "The content's size; 0 adds the `empty-output` warning."),
            ],
            (r, s) => new OutputRecorded
            {
                EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt,
                Name = r.Name!, Uri = r.Uri!, Sha256 = r.Sha256?.ToLowerInvariant(), Bytes = r.Bytes,
            }),
        new(WorkerEventTypes.ItemsCommitted, typeof(ItemsCommitted), "ItemsCommittedEvent", "A chunk of committed items, counted once per chunk id.",
            [
                new TextField("chunkId", e => e.ChunkId, true, MaxId, true, "Counted once: the same chunk again is a duplicate, with another count a conflict."),
                new CountField("count", e => e.Count, true, "Items in the chunk."),
            ],
            (r, s) => new ItemsCommitted { EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt, ChunkId = r.ChunkId!, Count = r.Count!.Value }),
        new(WorkerEventTypes.RunCompleted, typeof(RunCompleted), "RunCompletedEvent", "The worker says it is done; the run succeeds once every required piece is in.",
            [
                new CountField("itemsTotal", e => e.ItemsTotal, false, "Items the worker committed in all; must equal the committed chunks."),
                new CodesField("warnings", e => e.Warnings, WorkerEventRequest.Validator.MaxWarnings, WorkerEventRequest.Validator.WarningPattern,
                    "Short codes a success carries, e.g. `empty-output`; it stays a success.",
                    "A warning is a short code: 1-64 lower-case letters, digits and . _ -, e.g. empty-output."),
            ],
            (r, s) => new RunCompleted { EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt, ItemsTotal = r.ItemsTotal, Warnings = r.Warnings }),
        new(WorkerEventTypes.RunFailed, typeof(RunFailed), "RunFailedEvent", "The run failed, with the class of the failure.",
            [
                new ChoiceField("errorClass", e => e.ErrorClass, ErrorClasses.All, "The class of the failure; it becomes the run's `reason`."),
                new TextField("message", e => e.Message, false, WorkerEventRequest.Validator.MaxText, false, null),
            ],
            (r, s) => new RunFailed { EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt, ErrorClass = r.ErrorClass!, Message = r.Message }),
    ]);

    private readonly Dictionary<string, WorkerEventType> _byWire;
    private readonly Dictionary<Type, WorkerEventType> _byEvent;

    public WorkerEventCatalogue(IReadOnlyList<WorkerEventType> types)
    {
        Types = types;
        WireNames = types.Select(t => t.Wire).ToList();
        _byWire = types.ToDictionary(t => t.Wire, StringComparer.Ordinal);
        _byEvent = types.ToDictionary(t => t.Event);
        foreach (var type in types)
        {
            if (!type.Event.IsSubclassOf(typeof(WorkerEvent))) throw new ArgumentException($"{type.Event.Name} ({type.Wire}) is not a WorkerEvent.");
        }
    }

    /// <summary>The rows, in the order the description lists them.</summary>
    public IReadOnlyList<WorkerEventType> Types { get; }

    public IReadOnlyList<string> WireNames { get; }

    /// <summary>A catalogue with one more row (a new type tried out before it is written into <see cref="Default"/>).</summary>
    public WorkerEventCatalogue With(WorkerEventType type) => new([.. Types, type]);

    public WorkerEventType? ByWire(string? wire) => wire is not null && _byWire.TryGetValue(wire, out var type) ? type : null;

    public WorkerEventType? ByEvent(Type eventType) => _byEvent.GetValueOrDefault(eventType);
}

/// <summary>One worker event as it arrives on the wire: the union of every type's fields (the table says which a type takes).</summary>
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

    /// <summary>The event this valid request stands for, by its row of the table.</summary>
    public WorkerEvent ToEvent(DateTimeOffset recordedAt, WorkerEventCatalogue? catalogue = null) =>
        ((catalogue ?? WorkerEventCatalogue.Default).ByWire(Type) ?? throw new InvalidOperationException($"unvalidated event type {Type}"))
        .Create(this, new EventStamp(EventId!, OccurredAt!.Value, recordedAt));

    /// <summary>The checks of a worker event: the common members, then each type's fields as its row of the table gives them.</summary>
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

        public Validator() : this(WorkerEventCatalogue.Default) { }

        private Validator(WorkerEventCatalogue catalogue)
        {
            var wireNames = catalogue.WireNames;
            RuleFor(e => e.Type).NotEmpty()
                .Must(t => t is null || wireNames.Contains(t))
                .WithMessage($"Unknown event type; allowed: {string.Join(", ", wireNames)}.");
            RuleFor(e => e.EventId).NotEmpty().MaximumLength(MaxId).Printable();
            RuleFor(e => e.OccurredAt).NotNull();
            foreach (var type in catalogue.Types)
            {
                if (type.Fields.Count == 0) continue;
                When(e => e.Type == type.Wire, () =>
                {
                    foreach (var field in type.Fields) Check(field);
                });
            }
        }

        /// <summary>The checks of a catalogue other than the ledger's own (a type tried out in a test).</summary>
        public static Validator For(WorkerEventCatalogue catalogue) => new(catalogue);

        private void Check(WireField field)
        {
            switch (field)
            {
                case TextField t:
                {
                    IRuleBuilder<WorkerEventRequest, string?> rule = RuleFor(t.Member);
                    if (t.Required)
                    {
                        var present = rule.NotEmpty();
                        if (t.MissingMessage is not null) present = present.WithMessage(t.MissingMessage);
                        rule = present;
                    }
                    var limited = rule.MaximumLength(t.MaxLength);
                    if (t.Printable) limited.Printable();
                    break;
                }
                case CountField c:
                {
                    var get = c.Member.Compile();
                    if (c.Required) RuleFor(c.Member).NotNull().InclusiveBetween(0, InputRules.MaxCount);
                    else RuleFor(c.Member).InclusiveBetween(0, InputRules.MaxCount).When(e => get(e) is not null);
                    break;
                }
                case LinesField l:
                {
                    var get = l.Member.Compile();
                    RuleFor(l.Member).NotNull();
                    RuleFor(e => get(e)!.Count()).LessThanOrEqualTo(l.MaxItems).OverridePropertyName(l.Name).When(e => get(e) is not null);
                    RuleForEach(l.Member).NotNull().MaximumLength(l.MaxLength);
                    break;
                }
                case NumbersByNameField n:
                {
                    var get = n.Member.Compile();
                    RuleFor(n.Member).NotEmpty().WithMessage(n.MissingMessage);
                    RuleFor(e => get(e)!.Count).LessThanOrEqualTo(n.MaxItems).OverridePropertyName(n.Name).When(e => get(e) is not null);
                    RuleFor(n.Member).Custom((values, context) =>
                    {
                        foreach (var (name, value) in values ?? new Dictionary<string, double>())
                        {
                            if (name.Length is 0 or > InputLimits.MaxName || !InputText.IsIdentifier(name))
                                context.AddFailure(n.Name, $"Score names must be 1-{InputLimits.MaxName} characters, without control characters.");
                            else if (!double.IsFinite(value)) context.AddFailure($"{n.Name}.{name}", "Scores must be finite numbers.");
                        }
                    });
                    break;
                }
                case UriField u:
                    RuleFor(u.Member).NotEmpty().MaximumLength(u.MaxLength)
                        .Must(v => System.Uri.TryCreate(v, UriKind.Absolute, out _)).WithMessage("The uri must be absolute.");
                    break;
                case PatternField p:
                {
                    var get = p.Member.Compile();
                    RuleFor(p.Member).Matches(p.Pattern).When(e => get(e) is not null).WithMessage(p.Message);
                    break;
                }
                case CodesField c:
                {
                    var get = c.Member.Compile();
                    RuleFor(e => get(e)!.Count()).LessThanOrEqualTo(c.MaxItems).OverridePropertyName(c.Name).When(e => get(e) is not null);
                    RuleForEach(c.Member).NotEmpty().Matches(c.Pattern).WithMessage(c.Message);
                    break;
                }
                case ChoiceField c:
                    RuleFor(c.Member).NotEmpty()
                        .Must(v => v is null || c.Allowed.Contains(v))
                        .WithMessage($"Unknown {c.Name}; allowed: {string.Join(", ", c.Allowed)}.")
                        .WithState(_ => new RequestBody.AllowedValues(c.Allowed));
                    break;
                default:
                    throw new InvalidOperationException($"No checks for the field kind {field.GetType().Name}.");
            }
        }
    }
}
