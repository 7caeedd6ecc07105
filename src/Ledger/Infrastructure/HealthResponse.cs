using System.Text.Json;
using Ledger.Contract;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Ledger.Infrastructure;

/// <summary>
/// What <c>GET /health</c> answers: 200 with each check when ready; when not, the API's refusal
/// (503 <c>database-unavailable</c>, problem details, retryable, Retry-After) with the checks
/// as an extension member, so that every API answer that is not a success is problem details.
/// </summary>
public static class HealthResponse
{
    public static async Task Write(HttpContext context, HealthReport report)
    {
        var checks = report.Entries.ToDictionary(e => e.Key, e => new HealthCheck(
            e.Value.Status.ToString().ToLowerInvariant(), e.Value.Description));
        if (report.Status != HealthStatus.Unhealthy)
        {
            context.Response.ContentType = "application/json";
            await JsonSerializer.SerializeAsync(context.Response.Body,
                new Health(report.Status.ToString().ToLowerInvariant(), checks), LedgerJson.Options);
            return;
        }

        var failed = string.Join(", ", checks.Where(c => c.Value.Status != "healthy").Select(c => c.Key));
        var problem = Problem.Of(ProblemCodes.DatabaseUnavailable,
            $"Failing checks: {failed}. Retry after the indicated delay.") with { RetryAfterSeconds = 2, Instance = context.Request.Path };
        var body = JsonSerializer.SerializeToNode(problem, LedgerJson.Options)!.AsObject();
        body["checks"] = JsonSerializer.SerializeToNode(checks, LedgerJson.Options);
        problem.ApplyTo(context);
        context.Response.ContentType = "application/problem+json";
        await JsonSerializer.SerializeAsync(context.Response.Body, body, LedgerJson.Options);
    }

    public sealed record HealthCheck(string Status, string? Description);

    public sealed record Health(string Status, IReadOnlyDictionary<string, HealthCheck> Checks);
}
