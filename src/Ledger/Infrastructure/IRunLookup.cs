using Ledger.Contract;

namespace Ledger.Infrastructure;

/// <summary>
/// What the edge asks about runs before any slice has the request: the Runs slice answers it
/// (<c>Ledger.Runs.RunLookup</c>), so that this layer depends on no slice's storage.
/// </summary>
public interface IRunLookup
{
    /// <summary>The run's current status, or null when no run has this id.</summary>
    Task<RunStatus?> StatusOf(string runId, CancellationToken ct);

    /// <summary>The run a lease token (its digest) was issued for, or null for a token this ledger never issued.</summary>
    Task<string?> RunOfToken(string tokenHash, CancellationToken ct);
}
