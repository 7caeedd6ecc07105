using System.Text.Json;
using FluentValidation;
using Ledger.Contract;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Marten;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Wolverine.Http;

namespace Ledger.Runs;

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
