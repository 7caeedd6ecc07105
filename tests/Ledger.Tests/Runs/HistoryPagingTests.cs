using System.Net;
using System.Text.Json.Nodes;
using Ledger.Tests.Fixtures;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Runs;

/// <summary>History pages (pinned in PRODUCT.md): following <c>next</c> from any page size yields the whole history once, in order.</summary>
public sealed class HistoryPagingTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    private async Task<JsonNode> Page(string runId, string query)
    {
        var response = await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/events{query}", LedgerHost.ReadKey);
        Assert.True(response.Status == HttpStatusCode.OK, response.Text);
        return response.Json!;
    }

    [Fact]
    public async Task following_next_at_any_page_size_reads_every_event_once_in_order()
    {
        var random = new Random(1130);
        var (runId, token) = await _api.Started();
        var events = Enumerable.Range(0, 37).Select(i => Event("log", $"e{i}", fields: new { lines = new[] { $"line {i}" } })).ToArray();
        Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, token, events)).Status);

        var whole = await Page(runId, "");
        Assert.Null(whole["next"]);
        var all = whole["events"]!.AsArray().Select(e => e!["version"]!.GetValue<long>()).ToList();
        Assert.Equal(Enumerable.Range(1, 39).Select(v => (long)v), all); // registered, claimed, 37 logs
        Assert.Equal(39, whole["version"]!.GetValue<long>());
        Assert.Equal("running", whole["status"]!.GetValue<string>());

        for (var round = 0; round < 8; round++)
        {
            var limit = random.Next(1, 45);
            var read = new List<long>();
            long? after = 0;
            var pages = 0;
            while (after is { } a)
            {
                var page = await Page(runId, $"?after={a}&limit={limit}");
                var versions = page["events"]!.AsArray().Select(e => e!["version"]!.GetValue<long>()).ToList();
                Assert.True(versions.Count <= limit);
                Assert.Equal("running", page["status"]!.GetValue<string>()); // the run now, on every page
                read.AddRange(versions);
                after = page["next"]?.GetValue<long>();
                Assert.True(after is null || after == versions[^1], $"next {after} after page ending {versions.LastOrDefault()}");
                Assert.True(++pages <= 39, "paging does not end");
            }
            Assert.Equal(all, read);
            Assert.Equal((int)Math.Ceiling(39.0 / limit), pages);
        }
        Assert.Empty((await Page(runId, "?after=39"))["events"]!.AsArray());
    }

    [Theory]
    [InlineData("?after=-1", "after")]
    [InlineData("?limit=0", "limit")]
    [InlineData("?limit=5001", "limit")]
    public async Task an_impossible_page_is_a_422_that_says_where_the_run_stands(string query, string field)
    {
        var (runId, _) = await _api.Started();
        var response = await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/events{query}", LedgerHost.ReadKey);
        Assert.Equal(HttpStatusCode.UnprocessableEntity, response.Status);
        Assert.Equal([field], response.Json!["errors"]!.AsObject().Select(e => e.Key));
        Assert.Equal("claimed", response.RunStatus);
    }
}
