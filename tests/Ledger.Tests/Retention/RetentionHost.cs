using System.Net;
using System.Text.Json.Nodes;
using Ledger.Retention;
using Ledger.Tests.Fixtures;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Retention;

/// <summary>
/// A ledger with retention on (a window of two hours, past the lease tokens' default grace of one),
/// archives in a folder of its own, small chunks so that even short runs span several, and no
/// sweep of its own: tests sweep explicitly, so that time, not a timer, decides.
/// </summary>
public sealed class RetentionHost : IAsyncLifetime
{
    public static readonly TimeSpan Window = TimeSpan.FromHours(2);

    public string Directory { get; } = System.IO.Directory.CreateTempSubdirectory("ledger-archive-").FullName;
    public LedgerHost Ledger { get; }

    public RetentionHost() => Ledger = LedgerHost.With(Settings(Directory));

    public static Dictionary<string, string> Settings(string directory, IReadOnlyDictionary<string, string>? more = null)
    {
        var settings = new Dictionary<string, string>
        {
            ["Ledger:Retention:ArchiveAfter"] = Window.ToString(),
            ["Ledger:Retention:Directory"] = directory,
            ["Ledger:Retention:Sweeper"] = "false",
            ["Ledger:Retention:BatchSize"] = "7",
            ["Ledger:Retention:ChunkEvents"] = "10",
        };
        foreach (var (key, value) in more ?? new Dictionary<string, string>()) settings[key] = value;
        return settings;
    }

    public Task InitializeAsync() => Ledger.InitializeAsync();

    public async Task DisposeAsync()
    {
        await Ledger.DisposeAsync();
        try { System.IO.Directory.Delete(Directory, recursive: true); }
        catch (IOException) { }
    }
}

/// <summary>What the retention tests do through the real API and the real database.</summary>
public static class RetentionKit
{
    public static Task<RetentionSweepReport> RetentionSweep(this LedgerHost ledger, Alba.IAlbaHost? instance = null) =>
        (instance ?? ledger.Host).Services.GetRequiredService<RetentionSweeper>().SweepAsync(CancellationToken.None);

    public static RetentionStepReport Archiving(this RetentionSweepReport report) => report.Steps.Single(s => s.Step == ArchiveRunsStep.StepName);

    public static long Count(this RetentionStepReport report, string name) => report.Counts.GetValueOrDefault(name);

    /// <summary>Registers, claims and finishes a run on a board with a score; returns its id and lease token.</summary>
    public static async Task<(string RunId, string Token)> Finished(this Scenarios api, string board, string participant, double score,
        string? batch = null, string? runId = null, int logs = 3)
    {
        var (id, token) = await api.Started(new { runId = runId ?? NewRunId("kept"), board, participant, batch, leaseSeconds = 600 });
        var events = new List<object> { Event("run.started") };
        for (var i = 0; i < logs; i++) events.Add(Event("log", fields: new { lines = new[] { $"line {i}" } }));
        events.Add(Event("heartbeat"));
        events.Add(Event("scores.reported", fields: new { scores = new { s = score } }));
        events.Add(Event("run.completed"));
        foreach (var e in events)
        {
            var answer = await api.Events(id, token, e);
            Assert.True(answer.Code == 200, $"event answered {answer.Code}: {answer.Text}");
        }
        return (id, token);
    }

    /// <summary>Every row of a run's stream in the event store, as stored: what a restore must give back.</summary>
    public static async Task<List<string>> Rows(this LedgerHost ledger, string runId)
    {
        await using var connection = new NpgsqlConnection(ledger.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "select seq_id, version, id, type, timestamp, data::text, coalesce(mt_dotnet_type, '') from ledger.mt_events where stream_id = @id order by version", connection);
        command.Parameters.AddWithValue("id", runId);
        var rows = new List<string>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            rows.Add($"{reader.GetInt64(0)}|{reader.GetInt64(1)}|{reader.GetGuid(2)}|{reader.GetString(3)}|{reader.GetFieldValue<DateTimeOffset>(4):O}|{reader.GetString(5)}|{reader.GetString(6)}");
        }
        return rows;
    }

    public static async Task<long> Scalar(this LedgerHost ledger, string sql, params (string Name, object Value)[] parameters) =>
        Convert.ToInt64(await ledger.Scalar<object>(sql, parameters));

    public static async Task<T> Scalar<T>(this LedgerHost ledger, string sql, params (string Name, object Value)[] parameters)
    {
        await using var connection = new NpgsqlConnection(ledger.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        foreach (var (name, value) in parameters) command.Parameters.AddWithValue(name, value);
        return (T)(await command.ExecuteScalarAsync())!;
    }

    /// <summary>Every page of a run's history, as the API answers it (without the paging members).</summary>
    public static async Task<(JsonArray Events, bool? Archived)> History(this Scenarios api, string runId, int limit = 4)
    {
        var all = new JsonArray();
        bool? archived = null;
        long after = 0;
        while (true)
        {
            var page = await api.Send(HttpMethod.Get, $"/api/runs/{runId}/events?after={after}&limit={limit}", LedgerHost.ReadKey);
            Assert.True(page.Status == HttpStatusCode.OK, $"history answered {page.Code}: {page.Text}");
            archived = page.Json!["archived"]?.GetValue<bool>();
            foreach (var e in page.Json!["events"]!.AsArray()) all.Add(e!.DeepClone());
            if (page.Json!["next"] is not JsonValue next) break;
            after = next.GetValue<long>();
        }
        return (all, archived);
    }

    public static IEnumerable<string> Files(string directory) =>
        System.IO.Directory.EnumerateFiles(directory, "*" + ArchiveFiles.Extension, SearchOption.AllDirectories);

    public static async Task<string> Export(this LedgerHost ledger, string? runId = null, DateTimeOffset? since = null)
    {
        var store = ledger.Host.Services.GetRequiredService<IDocumentStore>();
        var archives = ledger.Host.Services.GetRequiredService<RunArchives>();
        using var output = new MemoryStream();
        if (runId is not null) await Ledger.Forensics.EventExport.WriteRunAsync(store, runId, output, CancellationToken.None, archives);
        else await Ledger.Forensics.EventExport.WriteSinceAsync(store, since!.Value, output, CancellationToken.None, archives);
        return System.Text.Encoding.UTF8.GetString(output.ToArray());
    }
}
