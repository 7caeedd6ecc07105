using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Ledger.Tests.Fixtures;
using Ledger.Tests.Infrastructure;
using Npgsql;
using Xunit.Abstractions;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Retention;

/// <summary>
/// A node killed with SIGKILL between writing a run's archive and removing its events, as real
/// processes: nothing is lost, the next sweep (of another node) reuses the archive already
/// written, and everything verifies.
/// </summary>
public sealed class RetentionCrashTests(ITestOutputHelper output)
{
    private const string Admin = "crash-admin-key-0123456789", Worker = "crash-worker-key-0123456789", Reader = "crash-read-key-0123456789";
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(120);

    [Fact]
    public async Task a_kill_9_between_writing_an_archive_and_removing_the_events_loses_nothing_and_the_next_sweep_reuses_the_archive()
    {
        var (server, database, name) = TestDatabase.Create();
        var cwd = Directory.CreateTempSubdirectory("ledger-crash-").FullName;
        var archive = Path.Combine(cwd, "archive");
        var nodes = new List<LedgerProcess>();
        try
        {
            async Task<(LedgerProcess Node, HttpClient Http)> Start(TimeSpan pause)
            {
                var node = LedgerProcess.Start(Environment(database, archive, pause), ["--urls", "http://127.0.0.1:0"], cwd);
                nodes.Add(node);
                var http = new HttpClient { BaseAddress = new Uri(await node.WaitForAddress(Patience)), Timeout = TimeSpan.FromSeconds(30) };
                return (node, http);
            }

            var a = await Start(TimeSpan.FromMinutes(5));
            var runs = new List<string>();
            for (var i = 0; i < 3; i++) runs.Add(await Finish(a.Http, i));
            var rows = new Dictionary<string, long>();
            foreach (var id in runs) rows[id] = await Count(database, "select count(*) from ledger.mt_events where stream_id = @id", id);

            // The sweep writes and checks an archive, then pauses (the fault drill) before removing anything: killed there.
            await Wait.Until(() => a.Node.Stdout.Contains("written and checked"), Patience, "an archive written and checked");
            a.Node.KillHard();
            output.WriteLine(a.Node.Stdout.Split('\n').First(l => l.Contains("written and checked")).Trim());
            Assert.NotEmpty(Directory.EnumerateFiles(archive, "*.rla", SearchOption.AllDirectories));
            foreach (var id in runs)
            {
                Assert.Equal(rows[id], await Count(database, "select count(*) from ledger.mt_events where stream_id = @id", id));
                Assert.Equal(0, await Count(database, "select count(*) from ledger.ledger_archived_runs where run_id = @id", id));
            }

            // Another node: takes events at once, and its sweep finishes the job, reusing what was written.
            var b = await Start(TimeSpan.Zero);
            var more = await Finish(b.Http, 9);
            await Wait.Until(async () =>
            {
                foreach (var id in runs)
                {
                    if (await Count(database, "select count(*) from ledger.ledger_archived_runs where run_id = @id and archived_version > 0", id) == 0) return false;
                }
                return true;
            }, Patience, "the next node to archive every run");
            // The node logs each run archived after the commit that the wait above saw: its line may come a moment later.
            await Wait.Until(() => b.Node.Stdout.Contains("reused"), TimeSpan.FromSeconds(15), () => "the next node to say it reused an archive; it said:\n" +
                string.Join('\n', b.Node.Stdout.Split('\n').Where(l => l.Contains("archive", StringComparison.OrdinalIgnoreCase))));
            foreach (var id in runs)
            {
                Assert.Equal(1, await Count(database, "select count(*) from ledger.mt_events where stream_id = @id", id));
                var history = await Get(b.Http, $"/api/runs/{id}/events");
                Assert.True(history["archived"]!.GetValue<bool>());
                Assert.Equal(rows[id], history["events"]!.AsArray().Count);
            }
            Assert.Equal("succeeded", (await Get(b.Http, $"/api/runs/{more}"))["status"]!.GetValue<string>());
            foreach (var n in nodes) n.Dispose();
            nodes.Clear();

            var verify = LedgerProcess.Run(Environment(database, archive, TimeSpan.Zero), ["verify"]);
            output.WriteLine(verify.Stdout.Trim());
            Assert.True(verify.ExitCode == 0 && verify.Stdout.Contains("verify: passed"), $"verify:\n{verify.All}");
        }
        finally
        {
            foreach (var n in nodes) n.Dispose();
            NpgsqlConnection.ClearAllPools();
            TestDatabase.Drop(server, name);
            Directory.Delete(cwd, recursive: true);
        }
    }

    private static Dictionary<string, string?> Environment(string database, string archive, TimeSpan pause) => new()
    {
        ["ASPNETCORE_ENVIRONMENT"] = "Production",
        ["ConnectionStrings__Ledger"] = database,
        ["Ledger__AdminKey"] = Admin,
        ["Ledger__WorkerKeys__0"] = Worker,
        ["Ledger__ReadKeys__0"] = Reader,
        ["Ledger__Janitor__Enabled"] = "false",
        ["Ledger__DaemonMode"] = "Leader",
        ["Ledger__LateEvents__Grace"] = "00:00:01",
        ["Ledger__Retention__ArchiveAfter"] = "00:00:02",
        ["Ledger__Retention__Directory"] = archive,
        ["Ledger__Retention__SweepInterval"] = "00:00:01",
        ["Ledger__Retention__FaultPauseAfterWrite"] = pause.ToString(),
        ["Ledger__Retention__MinFreeBytes"] = "0",
    };

    private static async Task<string> Finish(HttpClient http, int n)
    {
        var runId = NewRunId("crash");
        Assert.Equal(HttpStatusCode.Created, (await Post(http, "/api/runs", Admin, new { runId })).Status);
        var claim = await Post(http, $"/api/runs/{runId}/claim", Worker, new { worker = "w" });
        var token = claim.Json!["leaseToken"]!.GetValue<string>();
        var done = await Post(http, $"/api/runs/{runId}/events", token,
            new[] { Event("run.started"), Event("log", fields: new { lines = new[] { $"run {n}" } }), Event("run.completed") });
        Assert.True(done.Status == HttpStatusCode.OK, $"{done.Status}: {done.Text}");
        return runId;
    }

    private static async Task<long> Count(string database, string sql, string id)
    {
        await using var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        command.Parameters.AddWithValue("id", id);
        try
        {
            return Convert.ToInt64(await command.ExecuteScalarAsync());
        }
        catch (PostgresException e) when (e.SqlState == "42P01")
        {
            return 0; // the tables are created by the first node's start
        }
    }

    private static async Task<JsonNode> Get(HttpClient http, string url)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, url);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", Reader);
        using var response = await http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"{url}: {(int)response.StatusCode} {text}");
        return JsonNode.Parse(text)!;
    }

    private static async Task<(HttpStatusCode Status, string Text, JsonNode? Json)> Post(HttpClient http, string url, string key, object body)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, url)
        {
            Content = new StringContent(JsonSerializer.Serialize(body, Scenarios.Json), Encoding.UTF8, "application/json"),
        };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        using var response = await http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, text, text.Length == 0 ? null : JsonNode.Parse(text));
    }
}
