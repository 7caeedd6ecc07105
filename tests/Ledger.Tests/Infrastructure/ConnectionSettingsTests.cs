using System.Net;
using Ledger.Infrastructure;
using Ledger.Tests.Fixtures;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Infrastructure;

/// <summary>
/// Prepared statements survive from one session to the next (ConnectionSettings), what the
/// operator set wins, and a statement another node's schema change invalidated is run again
/// rather than answered as an error.
/// </summary>
public sealed class ConnectionSettingsTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    [Theory]
    [InlineData("Host=db;Port=5432;Username=ledger;Password=s3cret;Database=ledger", 64, 2)]
    [InlineData("Host=db;Max Auto Prepare=0", 0, 2)]
    [InlineData("Host=db;maxautoprepare=5", 5, 2)]
    [InlineData("Host=db;MAX AUTO PREPARE=7;Auto Prepare Min Usages=3", 7, 3)]
    [InlineData("Host=db;autoprepareminusages=1", 64, 1)]
    public void automatic_preparation_is_merged_in_unless_the_operator_set_it(string given, int maxAutoPrepare, int minUsages)
    {
        var merged = new NpgsqlConnectionStringBuilder(ConnectionSettings.WithStatementCaching(given));
        Assert.Equal(maxAutoPrepare, merged.MaxAutoPrepare);
        Assert.Equal(minUsages, merged.AutoPrepareMinUsages);
        // Everything else is left as it was given.
        var original = new NpgsqlConnectionStringBuilder(given);
        Assert.Equal(original.Host, merged.Host);
        Assert.Equal(original.Password, merged.Password);
        Assert.Equal(original.Database, merged.Database);
    }

    [Fact]
    public void the_service_connects_with_automatic_preparation()
    {
        var used = new NpgsqlConnectionStringBuilder(ledger.Host.Services.GetRequiredService<LedgerDatabase>().ConnectionString);
        Assert.Equal(ConnectionSettings.MaxAutoPrepare, used.MaxAutoPrepare);
    }

    [Fact]
    public async Task statements_invalidated_by_another_nodes_schema_change_are_prepared_again_not_answered_500()
    {
        // Runs claimed (the writer reads each new run's document) and read, enough times that the
        // statements that return a run document's columns are prepared on the pooled connections.
        var runs = new List<(string RunId, string Token)>();
        for (var i = 0; i < 6; i++) runs.Add(await _api.Started(new { runId = NewRunId("stale") }));
        foreach (var (runId, _) in runs)
        {
            for (var i = 0; i < 3; i++) await _api.Run(runId);
        }

        // Another node's migration changes the type of a column those statements return.
        var sql = new LedgerSql(ledger.ConnectionString);
        var type = await sql.Scalar<string>(
            "select data_type from information_schema.columns where table_schema = 'ledger' and table_name = 'mt_doc_run' and column_name = 'mt_version'");
        var other = type == "integer" ? "bigint" : "integer";
        await using (var conn = new NpgsqlConnection(ledger.ConnectionString))
        {
            await conn.OpenAsync();
            await using var alter = new NpgsqlCommand($"alter table ledger.mt_doc_run alter column mt_version type {other}", conn);
            await alter.ExecuteNonQueryAsync();
        }

        // Reads of the documents, new runs claimed (a first decision reads the run) and events: all answered as before.
        foreach (var (runId, token) in runs)
        {
            var read = await _api.GetRun(runId);
            Assert.True(read.Status == HttpStatusCode.OK, $"GET run after the schema change: {read.Status} {read.Text}");
            var recorded = await _api.Events(runId, token, Event("run.started"));
            Assert.True(recorded.Status == HttpStatusCode.OK, $"events after the schema change: {recorded.Status} {recorded.Text}");
        }
        for (var i = 0; i < 4; i++)
        {
            var runId = await _api.Register(new { runId = NewRunId("stale-new") });
            var claim = await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/claim", LedgerHost.WorkerKey, new { worker = "w" });
            Assert.True(claim.Status == HttpStatusCode.OK, $"claim after the schema change: {claim.Status} {claim.Text}");
        }
    }
}
