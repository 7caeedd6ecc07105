using Ledger.Tests.Fixtures;
using Microsoft.Extensions.DependencyInjection;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Leaderboards;

/// <summary>
/// <c>Ledger:Projections:WakeOnVerdict</c>: a verdict, appended on any node, wakes the projection
/// leader, so it reaches the board without waiting for the next poll. In each test the leader
/// polls only once a minute once caught up, so a board that shows the verdict within seconds was
/// woken, and one that does not was not. Every event comes once the leader has polled and found
/// nothing: it is then waiting, not polling.
/// </summary>
public sealed class ProjectionWakeTests
{
    private static Dictionary<string, string> Settings(bool wake) => new()
    {
        ["Ledger:Projections:WakeOnVerdict"] = wake ? "true" : "false",
        ["Ledger:Projections:IdlePollingMilliseconds"] = "60000",
    };

    [Fact]
    public async Task a_verdict_wakes_the_standings_without_waiting_for_the_poll()
    {
        var (ledger, runId) = await VerdictThroughAFollower(wake: true);
        try
        {
            var deadline = DateTime.UtcNow.AddSeconds(15);
            while (!await Ranked(ledger, runId))
            {
                Assert.True(DateTime.UtcNow < deadline, "the verdict did not reach the board within 15 s; polling is a minute apart");
                await Task.Delay(50);
            }
        }
        finally
        {
            await ledger.DisposeAsync();
        }
    }

    [Fact]
    public async Task without_the_wake_a_verdict_waits_for_the_next_poll()
    {
        var (ledger, runId) = await VerdictThroughAFollower(wake: false);
        try
        {
            await Task.Delay(3_000);
            Assert.False(await Ranked(ledger, runId), "the verdict reached the board without a poll or a wake");
        }
        finally
        {
            await ledger.DisposeAsync();
        }
    }

    /// <summary>A host of the test's own (the caller disposes it) whose idle leader gets a verdict from a follower.</summary>
    private static async Task<(LedgerHost Ledger, string RunId)> VerdictThroughAFollower(bool wake)
    {
        var ledger = LedgerHost.With(Settings(wake));
        await ledger.InitializeAsync();
        try
        {
            await Idle(ledger);
            await using var follower = await ledger.SecondInstance();
            var api = new Scenarios(ledger, follower);
            var (runId, token) = await Start(api);
            await Verdict(api, runId, token);
            return (ledger, runId);
        }
        catch
        {
            await ledger.DisposeAsync();
            throw;
        }
    }

    // The leader's polling loop has started and found no events: its next poll is a minute away.
    private static async Task Idle(LedgerHost ledger)
    {
        var coordinator = ledger.Host.Services.GetRequiredService<JasperFx.Events.Daemon.IProjectionCoordinator>();
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (coordinator.DaemonForMainDatabase().HighWaterLastPolledAt is null)
        {
            Assert.True(DateTime.UtcNow < deadline, "the projection daemon did not start within 30 s");
            await Task.Delay(50);
        }
        // The first cycle's poll, started at the heartbeat, is done well within this.
        await Task.Delay(1_000);
    }

    // One board per run, named after it.
    private static string Board(string runId) => "board-" + runId;

    private static async Task<(string RunId, string Token)> Start(Scenarios api)
    {
        var runId = NewRunId("wake");
        var created = await api.Send(HttpMethod.Post, "/api/boards", LedgerHost.AdminKey, new { id = Board(runId), primaryScore = "s", direction = "max" });
        Assert.Equal(System.Net.HttpStatusCode.Created, created.Status);
        return await api.Started(new { runId, board = Board(runId), participant = "a" });
    }

    private static async Task Verdict(Scenarios api, string runId, string token)
    {
        var finished = await api.Events(runId, token,
            new[] { Event("scores.reported", fields: new { scores = new { s = 1.0 } }), Event("run.completed") });
        Assert.Equal(System.Net.HttpStatusCode.OK, finished.Status);
    }

    private static async Task<bool> Ranked(LedgerHost ledger, string runId) =>
        (await new Scenarios(ledger).Send(HttpMethod.Get, $"/api/boards/{Board(runId)}/leaderboard", LedgerHost.ReadKey)).Text
            .Contains($"\"runId\":\"{runId}\"", StringComparison.Ordinal);
}
