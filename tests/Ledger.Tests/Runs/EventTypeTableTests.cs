using System.Linq.Expressions;
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Ledger.Contract;
using Ledger.OpenApi;
using Ledger.Infrastructure;
using Ledger.Runs;
using Ledger.Tests.Fixtures;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.OpenApi;

namespace Ledger.Tests.Runs;

/// <summary>A worker event made up for this test: a row of its own, reusing wire members that exist.</summary>
public sealed record RunPaused : WorkerEvent
{
    public required string Reason { get; init; }
    public required long Minutes { get; init; }
}

/// <summary>
/// The table of worker event types (<see cref="WorkerEventCatalogue"/>) is what the checks, the API
/// description, the history's names, Marten's event types and the fold read: a made-up type given a
/// row is checked with its limits, made, described with the same limits, and folded, without any
/// other change; and every row of the ledger's own table is whole (made from a valid request, an
/// Apply of its own, known to Marten, described) and goes through a live ledger: appended over
/// HTTP, named by its row in the history and the export, and rebuilt by verify.
/// </summary>
public sealed class EventTypeTableTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private const int MaxReason = 100;
    private static readonly DateTimeOffset T0 = new(2026, 12, 6, 9, 0, 0, TimeSpan.Zero);

    private static readonly WorkerEventType Paused = new("run.paused", typeof(RunPaused), "RunPausedEvent", "The worker paused the run.",
        [
            new TextField("message", e => e.Message, true, MaxReason, true, "Why the run is paused.", "A pause needs its reason."),
            new CountField("count", e => e.Count, true, "For how many minutes."),
        ],
        (r, s) => new RunPaused { EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt, Reason = r.Message!, Minutes = r.Count!.Value });

    private static readonly WorkerEventCatalogue WithPaused = WorkerEventCatalogue.Default.With(Paused);

    private static WorkerEventRequest Pause(string? reason = "maintenance", long? minutes = 5, string eventId = "p1") =>
        new() { Type = "run.paused", EventId = eventId, OccurredAt = T0, Message = reason, Count = minutes };

    [Fact]
    public void a_made_up_type_with_a_row_is_checked_by_its_limits_and_unknown_without_it()
    {
        var validator = WorkerEventRequest.Validator.For(WithPaused);
        Assert.True(validator.Validate(Pause()).IsValid);
        Assert.True(validator.Validate(Pause(reason: new string('r', MaxReason))).IsValid);

        var tooLong = validator.Validate(Pause(reason: new string('r', MaxReason + 1)));
        Assert.Equal(["Message"], tooLong.Errors.Select(e => e.PropertyName).Distinct());
        var missing = validator.Validate(Pause(reason: null, minutes: null));
        Assert.Contains(missing.Errors, e => e.PropertyName == "Message" && e.ErrorMessage == "A pause needs its reason.");
        Assert.Contains(missing.Errors, e => e.PropertyName == "Count");
        Assert.Contains(validator.Validate(Pause(minutes: -1)).Errors, e => e.PropertyName == "Count");
        Assert.Contains(validator.Validate(Pause(reason: "tab\there")).Errors, e => e.PropertyName == "Message");

        // The ledger's own table has no such row: the type itself is refused, naming the types there are.
        var own = new WorkerEventRequest.Validator().Validate(Pause());
        var unknown = Assert.Single(own.Errors);
        Assert.Equal("Type", unknown.PropertyName);
        Assert.DoesNotContain("run.paused", unknown.ErrorMessage);
        Assert.Contains(WorkerEventTypes.RunFailed, unknown.ErrorMessage);
    }

    [Fact]
    public void a_made_up_type_is_made_named_and_folded_from_its_row()
    {
        var recordedAt = T0.AddSeconds(2);
        var made = Assert.IsType<RunPaused>(Pause().ToEvent(recordedAt, WithPaused));
        Assert.Equal(("p1", T0, recordedAt, "maintenance", 5L), (made.EventId, made.OccurredAt, made.RecordedAt, made.Reason, made.Minutes));
        Assert.Equal("run.paused", WithPaused.ByEvent(typeof(RunPaused))!.Wire);
        Assert.Equal(WorkerEventCatalogue.Default.WireNames.Append("run.paused"), WithPaused.WireNames);

        // Folded as any report without a change of its own: the work has begun; once the run is over, it is late.
        var run = Claimed();
        Assert.Equal(EventResultKind.Applied, run.EffectOf(made).Kind);
        run.Fold(made);
        Assert.Equal((RunStatus.Running, recordedAt, recordedAt), (run.Status, run.StartedAt, run.LastEventAt));
        run.Fold(TestEvents.Failed(new Stamp("f1", T0.AddSeconds(3), T0.AddSeconds(3)), ErrorClasses.All[0]));
        var late = made with { EventId = "p2", RecordedAt = T0.AddSeconds(4) };
        Assert.True(run.EffectOf(late).Late);
        run.Fold(late);
        Assert.Equal((RunStatus.Failed, AnomalyKinds.LateEvent, "p2"), (run.Status, run.Anomalies[^1].Kind, run.Anomalies[^1].EventId));
    }

    [Fact]
    public void a_made_up_type_is_described_with_the_limits_it_is_checked_by()
    {
        var document = new OpenApiDocument { Components = new OpenApiComponents() };
        RequestSchemas.AddWorkerEvents(document, WithPaused);

        var schema = Assert.IsType<OpenApiSchema>(document.Components!.Schemas!["RunPausedEvent"]);
        Assert.Equal("The worker paused the run.", schema.Description);
        Assert.Equal(["type", "eventId", "occurredAt", "message", "count"], schema.Required!);
        Assert.Equal("run.paused", ((OpenApiSchema)schema.Properties!["type"]).Const);
        var reason = (OpenApiSchema)schema.Properties["message"];
        Assert.Equal((1, MaxReason), (reason.MinLength, reason.MaxLength));
        Assert.Equal("0", ((OpenApiSchema)schema.Properties["count"]).Minimum);

        var union = Assert.IsType<OpenApiSchema>(document.Components.Schemas[RequestSchemas.WorkerEvent]);
        Assert.Contains(union.OneOf!, s => s is OpenApiSchemaReference r && r.Reference.Id == "RunPausedEvent");
        Assert.Equal("RunPausedEvent", union.Discriminator!.Mapping!["run.paused"].Reference.Id);
        Assert.Equal(WorkerEventCatalogue.Default.Types.Count + 1, union.OneOf!.Count);
    }

    [Fact]
    public void every_row_of_the_ledgers_table_is_made_from_a_valid_request_folded_by_its_own_apply_known_to_marten_and_served()
    {
        var validator = new WorkerEventRequest.Validator();
        var store = ledger.Host.Services.GetRequiredService<IDocumentStore>();
        var known = store.Options.Events.AllKnownEventTypes().Select(t => t.EventType).ToHashSet();

        Assert.Equal(WorkerEventCatalogue.Default.WireNames, WorkerEventTypes.All);
        Assert.Equal(WorkerEventCatalogue.Default.Types.Count, WorkerEventCatalogue.Default.Types.Select(t => t.Event).Distinct().Count());
        foreach (var type in WorkerEventCatalogue.Default.Types)
        {
            var request = Valid(type);
            var validation = validator.Validate(request);
            Assert.True(validation.IsValid, $"{type.Wire}: {validation}");
            var made = request.ToEvent(T0.AddSeconds(3));
            Assert.Equal(type.Event, made.GetType());
            Assert.Equal(type.Wire, EventNames.WireName(made));
            Assert.Contains(type.Event, known);
            Assert.True(typeof(Run).GetMethod(nameof(Run.Apply), [type.Event]) is not null, $"Run has no Apply({type.Event.Name}): Marten's projection would skip it");

            // Folded by its Apply as the judge says: recorded unless refused (a step never started cannot complete).
            var run = Claimed();
            var effect = run.EffectOf(made);
            run.Fold(made);
            Assert.Equal(effect.Kind == EventResultKind.Refused ? null : T0.AddSeconds(3), run.LastEventAt);
            Assert.True(effect.Kind == EventResultKind.Applied || type.Wire == WorkerEventTypes.StepCompleted, $"{type.Wire}: {effect}");

            // Each required field, left out, is refused by its own name.
            foreach (var field in type.Fields.Where(f => f.Required))
            {
                var without = With(request, Member(field), null);
                Assert.Contains(validator.Validate(without).Errors, e => string.Equals(e.PropertyName, field.Name, StringComparison.OrdinalIgnoreCase));
            }
        }
    }

    [Fact]
    public async Task the_served_description_has_one_schema_per_row_with_its_required_fields()
    {
        using var http = ledger.Host.Server.CreateClient();
        var json = System.Text.Json.Nodes.JsonNode.Parse(await http.GetStringAsync("/openapi/v1.json"))!;
        var schemas = json["components"]!["schemas"]!;
        var union = schemas[RequestSchemas.WorkerEvent]!["oneOf"]!.AsArray().Select(r => r!["$ref"]!.GetValue<string>()).ToList();
        Assert.Equal(WorkerEventCatalogue.Default.Types.Select(t => $"#/components/schemas/{t.Schema}"), union);
        foreach (var type in WorkerEventCatalogue.Default.Types)
        {
            var required = schemas[type.Schema]!["required"]!.AsArray().Select(n => n!.GetValue<string>());
            Assert.Equal(["type", "eventId", "occurredAt", .. type.Fields.Where(f => f.Required).Select(f => f.Name)], required);
            Assert.Equal(type.Wire, schemas[type.Schema]!["properties"]!["type"]!["const"]!.GetValue<string>());
        }
    }

    [Fact]
    public async Task every_row_of_the_ledgers_table_is_appended_shown_in_history_exported_and_verified()
    {
        var api = new Scenarios(ledger);
        var store = ledger.Host.Services.GetRequiredService<IDocumentStore>();
        var rows = WorkerEventCatalogue.Default.Types;
        // One run takes every row in the table's order, its verdicts last; the failure goes to a run of its own.
        var terminal = new[] { WorkerEventTypes.RunCompleted, WorkerEventTypes.RunFailed };
        var plans = new[]
        {
            (Rows: rows.Where(t => !terminal.Contains(t.Wire)).Append(WorkerEventCatalogue.Default.ByWire(WorkerEventTypes.RunCompleted)!).ToList(), Status: "succeeded"),
            (Rows: [WorkerEventCatalogue.Default.ByWire(WorkerEventTypes.RunFailed)!], Status: "failed"),
        };
        Assert.Equal(rows.Select(t => t.Wire).Order(), plans.SelectMany(p => p.Rows).Select(t => t.Wire).Order());

        foreach (var (plan, status) in plans)
        {
            var (runId, token) = await api.Started();
            foreach (var type in plan)
            {
                var body = JsonSerializer.SerializeToNode(Valid(type) with { OccurredAt = api.Now }, Sent)!;
                var answer = await api.Events(runId, token, new[] { body });
                Assert.True(answer.Code is >= 200 and < 300, $"{type.Wire}: {answer.Code} {answer.Text}");
            }
            Assert.Equal(status, (await api.Run(runId))["status"]!.GetValue<string>());

            // The history and the export name each event by its row, in the order sent.
            var history = (await api.Send(HttpMethod.Get, $"/api/runs/{runId}/events", LedgerHost.AdminKey)).Json!["events"]!.AsArray()
                .Select(e => e!["type"]!.GetValue<string>()).ToList();
            Assert.Equal(plan.Select(t => t.Wire), history.Where(WorkerEventTypes.All.Contains));
            using var output = new MemoryStream();
            await Ledger.Forensics.EventExport.WriteRunAsync(store, runId, output, CancellationToken.None);
            var exported = System.Text.Encoding.UTF8.GetString(output.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries)
                .Select(l => JsonNode.Parse(l)!["type"]!.GetValue<string>());
            Assert.Equal(history, exported);
        }

        // Every projection rebuilt from these events alone equals the live one.
        var report = await ledger.Verify();
        Assert.True(report.Passed, string.Join("\n", report.Differences));
    }

    private static readonly JsonSerializerOptions Sent = new(JsonSerializerDefaults.Web) { DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };

    private static Run Claimed()
    {
        var run = Run.Create(TestEvents.Registered("table-run", T0));
        run.Fold(new RunClaimed("worker-1", "hash", T0.AddSeconds(1), T0.AddSeconds(61)));
        return run;
    }

    /// <summary>A request of the type with each of its fields set to a value its kind takes.</summary>
    private static WorkerEventRequest Valid(WorkerEventType type)
    {
        var request = new WorkerEventRequest { Type = type.Wire, EventId = $"{type.Wire}-1", OccurredAt = T0 };
        foreach (var field in type.Fields)
        {
            object? value = field switch
            {
                TextField => "text",
                CountField => 1L,
                LinesField => new List<string> { "a line" },
                NumbersByNameField => new Dictionary<string, double> { ["accuracy"] = 0.5 },
                UriField => "https://example.org/out",
                PatternField => null,
                CodesField => new List<string> { "a-code" },
                ChoiceField c => c.Allowed[0],
                _ => throw new InvalidOperationException($"A field kind this test does not know: {field.GetType().Name}"),
            };
            if (value is not null) request = With(request, Member(field), value);
        }
        return request;
    }

    private static LambdaExpression Member(WireField field) =>
        (LambdaExpression)field.GetType().GetProperty("Member")!.GetValue(field)!;

    private static WorkerEventRequest With(WorkerEventRequest request, LambdaExpression member, object? value)
    {
        var body = member.Body is UnaryExpression { NodeType: ExpressionType.Convert } convert ? convert.Operand : member.Body;
        var property = (PropertyInfo)((MemberExpression)body).Member;
        var copy = request with { };
        property.SetValue(copy, value);
        return copy;
    }
}
