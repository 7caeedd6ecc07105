using System.Net;
using Ledger.Runs;
using Ledger.Tests.Fixtures;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Runs;

/// <summary>The at-most-once keys of a run go with one call, in the caller's transaction (retention removes a finished run's keys with its events).</summary>
public sealed class RecordedKeyStoreTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);
    private readonly LedgerSql _sql = new(ledger.ConnectionString);

    [Fact]
    public async Task a_runs_keys_are_deleted_by_its_id_and_no_other_runs_are()
    {
        var gone = await _api.Started(new { runId = NewRunId("keys-gone") });
        var kept = await _api.Started(new { runId = NewRunId("keys-kept") });
        foreach (var (runId, token) in new[] { gone, kept })
        {
            Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, token, new[]
            {
                Event("log", "same-id", fields: new { lines = new[] { "x" } }),
                Event("items.committed", fields: new { chunkId = "chunk-1", count = 2 }),
            })).Status);
        }
        Assert.Equal(3, await Keys(gone.RunId));

        var store = ledger.Host.Services.GetRequiredService<IDocumentStore>();
        await using (var session = store.LightweightSession())
        {
            RecordedKeyStore.DeleteKeysOf(session, "ledger", gone.RunId);
            await session.SaveChangesAsync();
        }

        Assert.Equal(0, await Keys(gone.RunId));
        Assert.Equal(3, await Keys(kept.RunId));
    }

    private Task<long> Keys(string runId) =>
        _sql.Scalar<long>($"select count(*) from {{schema}}.{RecordedKeyStore.TableName} where run_id = @run", ("run", runId));
}
