using Ledger.Contract;
using Ledger.Infrastructure;
using Marten;

namespace Ledger.Runs;

/// <summary>The edge's questions about runs (<see cref="IRunLookup"/>), answered from the run's document and the lease tokens.</summary>
public sealed class RunLookup(IDocumentStore store, LeaseTokens leases) : IRunLookup
{
    public async Task<RunStatus?> StatusOf(string runId, CancellationToken ct)
    {
        await using var query = store.QuerySession();
        var run = await query.LoadAsync<Run>(runId, ct);
        return run?.Status;
    }

    public Task<string?> RunOfToken(string tokenHash, CancellationToken ct) => leases.RunOf(tokenHash, ct);
}
