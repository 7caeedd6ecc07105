using Ledger.Infrastructure;
using Ledger.Infrastructure.OpenApi;
using Marten;
using Microsoft.AspNetCore.Mvc;
using Wolverine.Http;

namespace Ledger.Runs;

public sealed record RunStateAsOf(long Version, DateTimeOffset RecordedAt, RunView State);

public static class GetRunStateEndpoint
{
    [WolverineGet("/api/runs/{id}/state", Name = "GetRunState")]
    [Accepts(Credential.AdminKey, Credential.ReadKey)]
    [Refuses(ProblemCodes.RunNotFound, ProblemCodes.StateNotFound)]
    [Tags("Forensics")]
    [EndpointSummary("The run as it was at a version or a time, refolded from its stream (admin or read key)")]
    [EndpointDescription("version=N: after the N-th event of the stream. at=TIME: after every event the ledger recorded at or before TIME. Neither: now, refolded.")]
    [ProducesResponseType<RunStateAsOf>(200)]
    public static async Task<IResult> Get(string id, HttpContext context, Access access, IDocumentStore store, long? version, string? at)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        await using var session = store.QuerySession();
        var events = await session.Events.FetchStreamAsync(id, token: context.RequestAborted);
        if (events.Count == 0) return RunDecider.NotFound(id).ToProblem(id).ToResult();
        // Refusals about this run say where it stands now.
        RunStatus Now() => RunReplay.Explain(events).Run.Status;

        if (!QueryValues.TryTime(at, "at", out var asOf, out var invalid) || version is < 1)
        {
            invalid ??= RequestBody.Invalid(new Dictionary<string, string[]> { ["version"] = ["Versions start at 1."] });
            return (invalid with { RunId = id, RunStatus = Now() }).ToResult();
        }

        var upTo = events.TakeWhile(e => (version is null || e.Version <= version) && (asOf is null || RunReplay.RecordedAt(e) <= asOf)).ToList();
        if (upTo.Count == 0 || (version is { } v && v > events[^1].Version))
        {
            return Problem.Of(ProblemCodes.StateNotFound, "The run had no such state",
                version is not null
                    ? $"The stream has {events[^1].Version} events."
                    : $"The run was registered at {RunReplay.RecordedAt(events[0]):O}.", runId: id, runStatus: Now()).ToResult();
        }

        var replay = RunReplay.Explain(upTo);
        return Results.Json(new RunStateAsOf(upTo[^1].Version, RunReplay.RecordedAt(upTo[^1]), RunView.From(replay.Run)), LedgerJson.Options);
    }
}
