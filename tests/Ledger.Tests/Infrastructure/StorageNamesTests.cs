using System.Net;
using System.Text.Json.Nodes;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Ledger.Leaderboards;
using Ledger.Runs;
using Ledger.Tests.Fixtures;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace Ledger.Tests.Infrastructure;

/// <summary>
/// Raw SQL takes its names from <see cref="StorageNames"/>; these tests hold those names against
/// the live database and the store's own serializer, so a change of mapping cannot leave the SQL behind.
/// </summary>
public sealed class StorageNamesTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private StorageNames Names => ledger.Host.Services.GetRequiredService<StorageNames>();
    private IDocumentStore Store => ledger.Host.Services.GetRequiredService<IDocumentStore>();

    [Fact]
    public async Task every_table_named_exists_in_the_database()
    {
        string[] tables =
        [
            Names.Events, Names.Streams, Names.Table<Run>(), Names.Table<Standing>(), Names.Table<AnomalyRecord>(),
            Names.Table<Rejection>(), Names.Table<LeaseHolder>(), Names.Own(RecordedKeyStore.TableName), Names.Own(RunSnapshotStore.TableName),
            Names.Own(CountedRefusals.TableName), Names.Own(KpiCounters.TableName), Names.Own(StandingsProjection.CurrentTable),
            Names.Own(StandingsProjection.ChangesTable),
        ];
        foreach (var table in tables)
        {
            Assert.True(await Scalar<bool>($"select to_regclass('{table}') is not null"), $"{table} is not a table of the database");
        }
        Assert.True(await Scalar<bool>($"select to_regprocedure('{Names.Function("mt_immutable_timestamptz")}(text)') is not null"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task the_board_queries_name_tables_and_columns_the_database_has(bool asOf)
    {
        // Two ranked runs on a board of their own: a misnamed table or column fails the query, and a misnamed
        // key, filter or order finds the wrong rows; the page must be both runs, best first, with what they reported.
        var api = new Scenarios(ledger);
        var board = Scenarios.NewRunId("names");
        var defined = await api.Send(HttpMethod.Post, "/api/boards", LedgerHost.AdminKey, new { id = board, primaryScore = "s", direction = "max" });
        Assert.True(defined.Status == HttpStatusCode.Created, defined.Text);
        var runs = new Dictionary<string, string>();
        foreach (var (participant, score) in new[] { ("low", 1.0), ("high", 2.0) })
        {
            var (runId, token) = await api.Started(new { runId = Scenarios.NewRunId(), board, participant });
            await api.Events(runId, token, new[] { Scenarios.Event("scores.reported", fields: new { scores = new { s = score } }), Scenarios.Event("run.completed") });
            runs[participant] = runId;
        }
        await ledger.Settled();

        var query = BoardQuery.For(Names, asOf);
        DateTimeOffset? at = asOf ? api.Now : null;
        await using var connection = new NpgsqlConnection(ledger.ConnectionString);
        await connection.OpenAsync();
        var rows = new List<(string Participant, string RunId, double Score)>();
        long? countedOnPage = null;
        await using (var page = new NpgsqlCommand(query.Page, connection))
        {
            foreach (var parameter in BoardQuery.Parameters(board, at, 1, 10, paging: true)) page.Parameters.Add(parameter);
            await using var reader = await page.ExecuteReaderAsync();
            while (await reader.ReadAsync())
            {
                rows.Add((reader.GetString(0), reader.GetString(1), reader.GetDouble(2)));
                if (query.PageCounts) countedOnPage = reader.GetInt64(5);
            }
        }
        await using var count = new NpgsqlCommand(query.Count, connection);
        foreach (var parameter in BoardQuery.Parameters(board, at, 1, 10, paging: false)) count.Parameters.Add(parameter);

        Assert.Equal([("high", runs["high"], 2.0), ("low", runs["low"], 1.0)], rows);
        Assert.Equal(2L, (long)(await count.ExecuteScalarAsync())!);
        if (query.PageCounts) Assert.Equal(2L, countedOnPage);
    }

    [Fact]
    public async Task a_duplicated_member_is_a_column_of_its_table_with_an_index_and_another_member_is_refused()
    {
        var column = Names.Column<Run>(r => r.TerminalAt);
        var table = Names.Table<Run>();
        Assert.True(await Scalar<bool>(
            $"select exists (select 1 from pg_attribute where attrelid = '{table}'::regclass and attname = '{column}' and not attisdropped)"),
            $"{column} is not a column of {table}");
        Assert.True(await Scalar<bool>($"select exists (select 1 from pg_indexes where schemaname || '.' || tablename = '{table}' and indexdef like '%({column})%')"),
            $"no index of {table} is on {column}");
        Assert.Equal("r." + column, Names.Column<Run>(r => r.TerminalAt, "r"));
        Assert.Throws<ArgumentException>(() => Names.Column<Run>(r => r.Participant));
    }

    [Fact]
    public void json_keys_are_the_ones_the_store_writes()
    {
        var serializer = Store.Options.Serializer();
        var run = JsonNode.Parse(serializer.ToJson(new Run { Id = "r", TerminalAt = DateTimeOffset.UnixEpoch, RegisteredAt = DateTimeOffset.UnixEpoch }))!.AsObject();
        foreach (var key in new[] { Names.JsonKey<Run>(r => r.Status), Names.JsonKey<Run>(r => r.TerminalAt), Names.JsonKey<Run>(r => r.RegisteredAt) })
        {
            Assert.True(run.ContainsKey(key), $"a stored run has no key {key}: {run.ToJsonString()}");
        }
        var anomaly = JsonNode.Parse(serializer.ToJson(new AnomalyRecord { Kind = "k", Detail = "d", At = DateTimeOffset.UnixEpoch }))!.AsObject();
        Assert.True(anomaly.ContainsKey(Names.JsonKey<AnomalyRecord>(a => a.Kind)));
        Assert.True(anomaly.ContainsKey(Names.JsonKey<AnomalyRecord>(a => a.At)));
        var items = JsonNode.Parse(serializer.ToJson(TestEvents.Items(new Stamp("e", DateTimeOffset.UnixEpoch, DateTimeOffset.UnixEpoch), "c", 1)))!.AsObject();
        Assert.True(items.ContainsKey(Names.JsonKey<ItemsCommitted>(i => i.ChunkId)));
        Assert.True(items.ContainsKey(Names.JsonKey<WorkerEvent>(i => i.EventId)));
    }

    [Fact]
    public async Task event_type_names_are_the_ones_in_the_event_table()
    {
        var api = new Scenarios(ledger);
        var (runId, token) = await api.Started();
        var answer = await api.Events(runId, token, new { type = "items.committed", eventId = "e1", occurredAt = ledger.Clock.GetUtcNow(), chunkId = "c1", count = 1 });
        Assert.True(answer.Code is 200 or 202, $"items.committed answered {answer.Code}: {answer.Text}");
        Assert.Equal(1, await Scalar<long>($"select count(*) from {Names.Events} where stream_id = '{runId}' and type = '{Names.EventType<ItemsCommitted>()}'"));
    }

    private async Task<T> Scalar<T>(string sql)
    {
        await using var connection = new NpgsqlConnection(ledger.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        return (T)(await command.ExecuteScalarAsync())!;
    }
}
