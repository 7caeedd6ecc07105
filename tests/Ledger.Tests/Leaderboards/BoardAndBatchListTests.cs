using System.Net;
using System.Text.Json.Nodes;
using Ledger.Tests.Fixtures;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Leaderboards;

/// <summary>GET /api/boards and GET /api/batches: every definition, newest first, paged, for a read or admin key.</summary>
public sealed class BoardAndBatchListTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    private static IReadOnlyList<string> Ids(JsonNode page, string field) =>
        page["items"]!.AsArray().Select(i => i![field]!.GetValue<string>()).ToList();

    [Fact]
    public async Task boards_are_listed_newest_first_in_pages_with_their_ranking()
    {
        var tag = Guid.NewGuid().ToString("N")[..8];
        var ids = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            var id = $"list-board-{tag}-{i}";
            var defined = await _api.Send(HttpMethod.Post, "/api/boards", LedgerHost.AdminKey,
                new { id, title = $"Board {i}", primaryScore = "accuracy", direction = i == 1 ? "min" : "max", tieBreakScore = i == 2 ? "latency" : null });
            Assert.True(defined.Status == HttpStatusCode.Created, $"{defined.Code}: {defined.Text}");
            ids.Add(id);
            ledger.Clock.Advance(TimeSpan.FromSeconds(1));
        }

        var all = await _api.Send(HttpMethod.Get, "/api/boards?pageSize=500", LedgerHost.ReadKey);
        Assert.Equal(HttpStatusCode.OK, all.Status);
        var mine = Ids(all.Json!, "id").Where(ids.Contains).ToList();
        Assert.Equal([ids[2], ids[1], ids[0]], mine);
        var min = all.Json!["items"]!.AsArray().Single(b => b!["id"]!.GetValue<string>() == ids[1])!;
        Assert.Equal("min", min["ranking"]!["direction"]!.GetValue<string>());
        Assert.Equal("Board 1", min["title"]!.GetValue<string>());

        var total = all.Json["total"]!.GetValue<long>();
        var first = await _api.Send(HttpMethod.Get, "/api/boards?pageSize=2", LedgerHost.AdminKey);
        var second = await _api.Send(HttpMethod.Get, "/api/boards?pageSize=2&page=2", LedgerHost.AdminKey);
        Assert.Equal(total, first.Json!["total"]!.GetValue<long>());
        Assert.Equal(2, first.Json["items"]!.AsArray().Count);
        Assert.Equal(2, second.Json!["page"]!.GetValue<int>());
        Assert.Empty(Ids(first.Json, "id").Intersect(Ids(second.Json, "id")));
    }

    [Fact]
    public async Task batches_are_listed_newest_first_in_pages_with_the_number_of_runs_each_expects()
    {
        var tag = Guid.NewGuid().ToString("N")[..8];
        var small = $"list-batch-{tag}-small";
        var matrix = $"list-batch-{tag}-matrix";
        await _api.DefineBatch(new { id = small, title = "two runs", runIds = new[] { NewRunId("a"), NewRunId("b") } });
        ledger.Clock.Advance(TimeSpan.FromSeconds(1));
        await _api.DefineBatch(new { id = matrix, matrix = new { labels = new { model = new[] { "m1", "m2", "m3" }, region = new[] { "US", "eu-west" } } } });

        var page = await _api.Send(HttpMethod.Get, "/api/batches?pageSize=500", LedgerHost.ReadKey);
        Assert.Equal(HttpStatusCode.OK, page.Status);
        var mine = page.Json!["items"]!.AsArray().Where(b => b!["batchId"]!.GetValue<string>().Contains(tag)).ToList();
        Assert.Equal([matrix, small], mine.Select(b => b!["batchId"]!.GetValue<string>()));
        Assert.Equal(6, mine[0]!["expected"]!.GetValue<int>());
        Assert.Equal(2, mine[1]!["expected"]!.GetValue<int>());
        Assert.Equal("two runs", mine[1]!["title"]!.GetValue<string>());
        Assert.NotNull(mine[1]!["createdAt"]);

        var paged = await _api.Send(HttpMethod.Get, "/api/batches?pageSize=1&page=2", LedgerHost.AdminKey);
        Assert.Single(paged.Json!["items"]!.AsArray());
        Assert.Equal(1, paged.Json["pageSize"]!.GetValue<int>());
    }

    [Theory]
    [InlineData("/api/boards")]
    [InlineData("/api/batches")]
    public async Task the_lists_need_a_read_or_admin_key_and_refuse_a_page_that_is_not_one(string path)
    {
        Assert.Equal(HttpStatusCode.Unauthorized, (await _api.Send(HttpMethod.Get, path, null)).Status);
        Assert.Equal(HttpStatusCode.Forbidden, (await _api.Send(HttpMethod.Get, path, LedgerHost.WorkerKey)).Status);

        foreach (var query in new[] { "?page=abc", "?pageSize=0", "?pageSize=501", "?page=0" })
        {
            var refused = await _api.Send(HttpMethod.Get, path + query, LedgerHost.ReadKey);
            Assert.True(refused.Status == (HttpStatusCode)422, $"{query}: {refused.Code} {refused.Text}");
            Assert.Equal("invalid-payload", refused.ProblemCode);
            Assert.False(refused.Retryable);
        }
    }
}
