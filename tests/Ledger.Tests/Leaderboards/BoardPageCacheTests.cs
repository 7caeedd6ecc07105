using Ledger.Leaderboards;
using Ledger.Tests.Fixtures;
using Microsoft.Extensions.Options;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Leaderboards;

public sealed class BoardPageCacheTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private static readonly byte[] Page = [1, 2, 3];

    private static BoardPageCache Cache(int freshness) => new(Options.Create(new LeaderboardOptions { PageFreshnessMilliseconds = freshness }));

    [Fact]
    public async Task concurrent_readers_of_one_page_share_one_database_read_within_the_window()
    {
        var cache = Cache(60_000);
        var reads = 0;
        var gate = new TaskCompletionSource();
        async Task<byte[]> Read()
        {
            Interlocked.Increment(ref reads);
            await gate.Task;
            return Page;
        }

        var readers = Enumerable.Range(0, 16).Select(_ => cache.Get("b", 1, 50, Read)).ToList();
        gate.SetResult();
        await Task.WhenAll(readers);
        Assert.Equal(1, reads);
        await cache.Get("b", 2, 50, Read); // another page is another read
        await cache.Get("other", 1, 50, Read); // and another board
        Assert.Equal(3, reads);
    }

    [Fact]
    public async Task a_page_is_read_again_once_its_window_has_passed_and_a_failed_read_is_never_kept()
    {
        var cache = Cache(50);
        var reads = 0;
        Task<byte[]> Read() { Interlocked.Increment(ref reads); return Task.FromResult(Page); }
        await cache.Get("b", 1, 50, Read);
        await Task.Delay(120);
        await cache.Get("b", 1, 50, Read);
        Assert.Equal(2, reads);

        var failing = Cache(60_000);
        await Assert.ThrowsAsync<InvalidOperationException>(() => failing.Get("b", 1, 50, () => throw new InvalidOperationException("database down")));
        Assert.Equal(Page, await failing.Get("b", 1, 50, () => Task.FromResult(Page)));
    }

    [Fact]
    public async Task without_a_window_every_read_goes_to_the_database()
    {
        var cache = Cache(0);
        var reads = 0;
        for (var i = 0; i < 3; i++) await cache.Get("b", 1, 50, () => { reads++; return Task.FromResult(Page); });
        Assert.Equal(3, reads);
    }

    [Fact]
    public async Task an_instance_with_a_window_answers_a_page_it_read_until_the_window_passes()
    {
        var api = new Scenarios(ledger);
        var board = NewRunId("cached");
        await api.Send(HttpMethod.Post, "/api/boards", LedgerHost.AdminKey, new { id = board, primaryScore = "s", direction = "max" });
        await using var cached = await ledger.SecondInstance(new Dictionary<string, string> { ["Ledger:Leaderboards:PageFreshnessMilliseconds"] = "60000" });
        var viaCache = new Scenarios(ledger, cached);
        var (first, t1) = await api.Started(new { runId = NewRunId(), board, participant = "a" });
        await api.Events(first, t1, new[] { Event("scores.reported", fields: new { scores = new { s = 1.0 } }), Event("run.completed") });
        await ledger.Settled();
        Assert.Equal(1, (await viaCache.Send(HttpMethod.Get, $"/api/boards/{board}/leaderboard", LedgerHost.ReadKey)).Json!["participants"]!.GetValue<long>());

        var (second, t2) = await api.Started(new { runId = NewRunId(), board, participant = "b" });
        await api.Events(second, t2, new[] { Event("scores.reported", fields: new { scores = new { s = 2.0 } }), Event("run.completed") });
        await ledger.Settled();
        // The cached instance still answers the page it read; the one without a window answers the new board.
        Assert.Equal(1, (await viaCache.Send(HttpMethod.Get, $"/api/boards/{board}/leaderboard", LedgerHost.ReadKey)).Json!["participants"]!.GetValue<long>());
        Assert.Equal(2, (await api.Send(HttpMethod.Get, $"/api/boards/{board}/leaderboard", LedgerHost.ReadKey)).Json!["participants"]!.GetValue<long>());
        // A board as of a time is never cached.
        var at = Uri.EscapeDataString(api.Now.ToString("O"));
        Assert.Equal(2, (await viaCache.Send(HttpMethod.Get, $"/api/boards/{board}/leaderboard?at={at}", LedgerHost.ReadKey)).Json!["participants"]!.GetValue<long>());
    }
}
