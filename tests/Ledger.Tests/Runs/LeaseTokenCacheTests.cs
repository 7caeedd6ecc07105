using System.Net;
using Ledger.Infrastructure;
using Ledger.Runs;
using Ledger.Tests.Fixtures;
using Microsoft.Extensions.DependencyInjection;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Runs;

/// <summary>
/// The cache of lease tokens stays bounded whatever the number of claims, and a token it let go
/// still authenticates its run (read back from the stored lease holder).
/// </summary>
public sealed class LeaseTokenCacheTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    [Fact]
    public async Task the_cache_stays_bounded_and_a_token_it_let_go_still_authenticates()
    {
        var (runId, token) = await _api.Started();
        var leases = ledger.Host.Services.GetRequiredService<LeaseTokens>();
        Assert.Equal(runId, await leases.RunOf(Access.DigestHex(token), CancellationToken.None));

        // Many more claims than the cache holds (digests of tokens never issued: only the count matters here).
        var random = new Random(Environment.TickCount);
        for (var i = 0; i < 3 * LeaseTokens.Capacity; i++)
        {
            leases.Remember(Convert.ToHexStringLower(BitConverter.GetBytes(random.NextInt64())) + i, $"run-{i}");
            Assert.True(leases.Cached <= LeaseTokens.Capacity, $"{leases.Cached} tokens cached after {i + 1} remembered");
        }

        // The first token was let go when the cache was emptied; the worker's next event still goes through.
        var response = await _api.Events(runId, token, Event("heartbeat"));
        Assert.True(response.Status == HttpStatusCode.OK, $"{response.Code} {response.Text}");
        Assert.Equal("applied", response.Json!["results"]![0]!["result"]!.GetValue<string>());
    }
}
