using Ledger.Contract;
using Ledger.Infrastructure;
using Microsoft.AspNetCore.Mvc;
using Wolverine.Http;

namespace Ledger.Runs;

/// <summary>The run at a version or a time; <c>archived</c> is true when it was refolded from the run's archive.</summary>
public sealed record RunStateAsOf(long Version, DateTimeOffset RecordedAt, RunView State, bool? Archived = null);

public static class GetRunStateEndpoint
{
    [WolverineGet("/api/runs/{id}/state", Name = "GetRunState")]
    [Accepts(Credential.AdminKey, Credential.ReadKey)]
    [Refuses(ProblemCodes.RunNotFound, ProblemCodes.StateNotFound, ProblemCodes.RunArchived)]
    [Tags("Forensics")]
    [EndpointSummary("The run as it was at a version or a time, refolded from its stream (admin or read key)")]
    [EndpointDescription("version=N: after the N-th event of the stream. at=TIME: after every event the ledger recorded at or before TIME. Neither: now, refolded.")]
    [ProducesResponseType<RunStateAsOf>(200)]
    public static async Task<IResult> Get(string id, HttpContext context, Access access, RunHistoryReader history, long? version, string? at)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        var valid = QueryValues.TryTime(at, "at", out var asOf, out var invalid) && version is not < 1;
        await using var reading = await history.OpenAsync(id, version ?? long.MaxValue, valid ? asOf : null, context.RequestAborted);
        // Refusals about this run say where it stands now.
        if (reading.Current is not { } now) return RunDecider.NotFound(id).ToProblem(id).ToResult();

        if (!valid)
        {
            invalid ??= RequestBody.Invalid(new Dictionary<string, string[]> { ["version"] = ["Versions start at 1."] });
            return (invalid with { RunId = id, RunStatus = now.Status }).ToResult();
        }

        // From the nearest snapshot at or before the version (and whose events were all recorded by then).
        var state = version is { } v && v > now.Version ? null : await history.StateAsync(reading, version ?? now.Version, asOf, context.RequestAborted);
        if (state is not { Run: { } run, Last: { } last })
        {
            return Problem.Of(ProblemCodes.StateNotFound,
                version is not null
                    ? $"The stream has {now.Version} events."
                    : $"The run was registered at {now.RegisteredAt:O}.", runId: id, runStatus: now.Status).ToResult();
        }

        return Results.Json(new RunStateAsOf(last.Version, last.RecordedAt, RunView.From(run), reading.Archive is null ? null : true), LedgerJson.Options);
    }
}
