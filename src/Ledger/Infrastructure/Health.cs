using Marten;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Ledger.Infrastructure;

/// <summary>Ready means the event store answers: the service can take events.</summary>
public sealed class DatabaseHealthCheck(IDocumentStore store) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken ct = default)
    {
        try
        {
            await using var session = store.QuerySession();
            await session.QueryAsync<int>("select 1", ct);
            return HealthCheckResult.Healthy("The event store answers.");
        }
        catch (Exception e)
        {
            return HealthCheckResult.Unhealthy("The event store does not answer.", e);
        }
    }
}
