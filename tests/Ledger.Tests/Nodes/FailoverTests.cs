using System.Diagnostics;
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

namespace Ledger.Tests.Nodes;

/// <summary>
/// Several nodes on one PostgreSQL, as real processes: Marten's HotCold daemon runs the async
/// projections on one of them, and when that one is killed (SIGKILL: no shutdown code runs)
/// another takes over while runs keep finishing. Nothing is lost or applied twice: the
/// <c>verify</c> command rebuilds every projection from the events and compares.
/// </summary>
public sealed class FailoverTests(ITestOutputHelper output)
{
    private const string Admin = "failover-admin-key", Worker = "failover-worker-key", Reader = "failover-read-key";
    // The target is 15 s (docs/operations.md, "Running several nodes"); the assertion leaves room for a loaded CI machine.
    private static readonly TimeSpan TakeoverLimit = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(90);
    private const string Leading = "Started projection agent Standing";

    [Fact]
    public async Task killing_the_node_that_runs_the_projections_hands_them_to_another_without_losing_or_repeating_work()
    {
        var (server, database, name) = TestDatabase.Create();
        var cwd = Directory.CreateTempSubdirectory("ledger-failover-").FullName;
        var nodes = new List<LedgerProcess>();
        try
        {
            async Task<(LedgerProcess Node, HttpClient Http)> Start()
            {
                var node = LedgerProcess.Start(Environment(database), ["--urls", "http://127.0.0.1:0"], cwd);
                nodes.Add(node);
                var http = new HttpClient { BaseAddress = new Uri(await node.WaitForAddress(Patience)), Timeout = TimeSpan.FromSeconds(30) };
                return (node, http);
            }

            var a = await Start();
            await Wait.Until(() => a.Node.Stdout.Contains(Leading), Patience, "the first node to lead the projections");
            var b = await Start();
            var board = NewRunId("board");
            Assert.Equal(HttpStatusCode.Created, (await Post(a.Http, "/api/boards", Admin, new { id = board, primaryScore = "score", direction = "max" })).Status);

            var finished = 0;
            var takeovers = new List<TimeSpan>();
            var (leader, survivor) = (a, b);
            for (var round = 1; round <= 2; round++)
            {
                // Runs finish through the survivor before, during and after the kill.
                for (var i = 0; i < 5; i++) await Finish(survivor.Http, board, ++finished);
                await Wait.Until(async () => await Participants(survivor.Http, board) == finished, Patience, "the leader to project every run");

                // Exactly one node runs the projections, and it is the one about to die.
                Assert.Contains(Leading, leader.Node.Stdout);
                Assert.DoesNotContain(Leading, survivor.Node.Stdout);

                var beforeKill = finished;
                leader.Node.KillHard();
                var clock = Stopwatch.StartNew();
                using var stop = new CancellationTokenSource();
                var writing = Task.Run(async () =>
                {
                    while (!stop.IsCancellationRequested)
                    {
                        await Finish(survivor.Http, board, Interlocked.Increment(ref finished));
                        await Task.Delay(200);
                    }
                });
                await Wait.Until(async () => await Participants(survivor.Http, board) > beforeKill, TakeoverLimit,
                    $"another node to take the projections over (round {round})");
                takeovers.Add(clock.Elapsed);
                output.WriteLine($"round {round}: projections taken over {clock.Elapsed.TotalSeconds:0.0} s after the leader's kill -9");
                await stop.CancelAsync();
                await writing;
                // Its line saying so may come after the first page it projected.
                await Wait.Until(() => survivor.Node.Stdout.Contains(Leading), TimeSpan.FromSeconds(30), $"the survivor to say it leads (round {round})");

                if (round == 2) break;
                // A new node joins; the survivor, which leads now, is the next to die.
                var c = await Start();
                (leader, survivor) = (survivor, c);
            }

            await Wait.Until(async () => await Participants(survivor.Http, board) == finished, Patience, "the projections to catch up with every run");
            foreach (var n in nodes) n.Dispose();
            nodes.Clear();

            // Every event was projected exactly once: the live projections equal their rebuild from the events.
            var verify = LedgerProcess.Run(Environment(database), ["verify"]);
            output.WriteLine(verify.Stdout.Trim());
            Assert.True(verify.ExitCode == 0 && verify.Stdout.Contains("verify: passed"), $"verify:\n{verify.All}");
            output.WriteLine($"{finished} runs; takeovers {string.Join(", ", takeovers.Select(t => $"{t.TotalSeconds:0.0} s"))}");
        }
        finally
        {
            foreach (var n in nodes) n.Dispose();
            NpgsqlConnection.ClearAllPools();
            TestDatabase.Drop(server, name);
            Directory.Delete(cwd, recursive: true);
        }
    }

    private static Dictionary<string, string?> Environment(string database) => new()
    {
        ["ASPNETCORE_ENVIRONMENT"] = "Production",
        ["ConnectionStrings__Ledger"] = database,
        ["Ledger__AdminKey"] = Admin,
        ["Ledger__WorkerKeys__0"] = Worker,
        ["Ledger__ReadKeys__0"] = Reader,
        ["Ledger__Janitor__Enabled"] = "false",
        ["Ledger__DaemonMode"] = "Leader",
        // Which node leads is read from its log.
        ["Logging__LogLevel__Marten.Events.Daemon.Coordination"] = "Information",
    };

    private static async Task Finish(HttpClient http, string board, int n)
    {
        var runId = NewRunId("failover");
        Assert.Equal(HttpStatusCode.Created, (await Post(http, "/api/runs", Admin, new { runId, board, participant = $"p{n}" })).Status);
        var claim = await Post(http, $"/api/runs/{runId}/claim", Worker, new { worker = "w" });
        Assert.Equal(HttpStatusCode.OK, claim.Status);
        var token = claim.Json!["leaseToken"]!.GetValue<string>();
        var done = await Post(http, $"/api/runs/{runId}/events", token,
            new[] { Event("scores.reported", fields: new { scores = new { score = n / 1000.0 } }), Event("run.completed") });
        Assert.True(done.Status == HttpStatusCode.OK, $"{done.Status}: {done.Text}");
    }

    private static async Task<long> Participants(HttpClient http, string board)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, $"/api/boards/{board}/leaderboard?pageSize=1");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", Reader);
        using var response = await http.SendAsync(request);
        return response.IsSuccessStatusCode
            ? JsonNode.Parse(await response.Content.ReadAsStringAsync())!["participants"]!.GetValue<long>()
            : -1;
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
