using System.Net;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using Alba;
using Ledger.Tests.Console;
using Ledger.Tests.Fixtures;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Ledger.Tests.Infrastructure;

/// <summary>
/// The test server has no client addresses: this gives each request the one its X-Test-Client
/// header names, as Kestrel would give it the peer's, before the ledger's pipeline sees it.
/// </summary>
public sealed class ClientAddressFromHeader : IStartupFilter
{
    public const string Header = "X-Test-Client";

    public static void AddTo(IServiceCollection services) => services.AddSingleton<IStartupFilter>(new ClientAddressFromHeader());

    public Action<IApplicationBuilder> Configure(Action<IApplicationBuilder> next) => app =>
    {
        app.Use((context, then) =>
        {
            if (IPAddress.TryParse(context.Request.Headers[Header].ToString(), out var address)) context.Connection.RemoteIpAddress = address;
            return then(context);
        });
        next(app);
    };
}

/// <summary>
/// /api throttles wrong keys per client address: only wrong keys count, so a busy address of
/// valid callers is never throttled, and a throttled one gets 429 with Retry-After until its
/// window has passed.
/// </summary>
public sealed class WrongKeyThrottleTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private static async Task<(HttpStatusCode Status, string? Code, HttpResponseMessage Response)> Send(IAlbaHost host, string client, string? key,
        string url = "/api/runs?pageSize=1", Dictionary<string, string>? headers = null)
    {
        using var http = host.Server.CreateClient();
        using var request = new HttpRequestMessage(HttpMethod.Get, url);
        request.Headers.Add(ClientAddressFromHeader.Header, client);
        if (key is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        foreach (var (name, value) in headers ?? []) request.Headers.Add(name, value);
        var response = await http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        string? code = null;
        try { code = JsonNode.Parse(text)?["code"]?.GetValue<string>(); } catch (System.Text.Json.JsonException) { }
        return (response.StatusCode, code, response);
    }

    private Task<IAlbaHost> Throttling(int limit, int windowSeconds, Dictionary<string, string>? more = null)
    {
        var settings = new Dictionary<string, string>
        {
            ["Ledger:WrongKeys:Limit"] = limit.ToString(),
            ["Ledger:WrongKeys:WindowSeconds"] = windowSeconds.ToString(),
            ["Ledger:DaemonMode"] = "Disabled",
        };
        foreach (var (k, v) in more ?? []) settings[k] = v;
        return ledger.SecondInstance(settings, ClientAddressFromHeader.AddTo);
    }

    [Fact]
    public async Task an_address_that_sent_too_many_wrong_keys_gets_429_with_retry_after_until_its_window_passes()
    {
        // A window long enough that the requests below fall into one, even on a loaded machine.
        await using var host = await Throttling(limit: 5, windowSeconds: 15);
        const string attacker = "198.51.100.23", colleague = "198.51.100.24";
        for (var i = 0; i < 5; i++) Assert.Equal((HttpStatusCode.Unauthorized, "invalid-credentials"), (await Send(host, attacker, $"guess-{i}-0123456789")) is var r ? (r.Status, r.Code) : default);

        // Now everything from that address waits, a right key included: a guess must not learn it was right.
        foreach (var key in new[] { "guess-5-0123456789", LedgerHost.ReadKey })
        {
            var (status, code, response) = await Send(host, attacker, key);
            Assert.Equal(HttpStatusCode.TooManyRequests, status);
            Assert.Equal("too-many-wrong-keys", code);
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
            Assert.True(response.Headers.RetryAfter?.Delta is { } wait && wait > TimeSpan.Zero && wait <= TimeSpan.FromSeconds(15), $"{response.Headers.RetryAfter}");
            var problem = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
            Assert.True(problem["retryable"]!.GetValue<bool>());
            Assert.DoesNotContain(key, problem.ToJsonString());
        }
        // Another address is not concerned.
        Assert.Equal(HttpStatusCode.OK, (await Send(host, colleague, LedgerHost.ReadKey)).Status);

        // Once the window has passed, the address is served again.
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while ((await Send(host, attacker, LedgerHost.ReadKey)).Status != HttpStatusCode.OK)
        {
            Assert.True(DateTime.UtcNow < deadline, "still throttled 60 s after a 15 s window");
            await Task.Delay(250);
        }
    }

    [Fact]
    public async Task only_wrong_keys_count_so_many_valid_callers_behind_one_address_are_never_throttled()
    {
        await using var host = await Throttling(limit: 3, windowSeconds: 60);
        const string shared = "203.0.113.50";
        for (var i = 0; i < 60; i++)
        {
            Assert.Equal(HttpStatusCode.OK, (await Send(host, shared, i % 2 == 0 ? LedgerHost.ReadKey : LedgerHost.AdminKey)).Status);
            // No key at all, or a valid key without the role: refused, but not a wrong key.
            Assert.Equal(HttpStatusCode.Unauthorized, (await Send(host, shared, null)).Status);
            Assert.Equal(HttpStatusCode.Forbidden, (await Send(host, shared, LedgerHost.WorkerKey, "/api/kpis")).Status);
        }
        // Outside /api nothing is counted or throttled either.
        Assert.Equal(HttpStatusCode.OK, (await Send(host, shared, "wrong-key-0123456789", "/health/live")).Status);
        Assert.Equal(HttpStatusCode.OK, (await Send(host, shared, LedgerHost.ReadKey)).Status);
    }

    [Fact]
    public async Task an_ipv6_client_is_counted_by_its_slash_64()
    {
        await using var host = await Throttling(limit: 2, windowSeconds: 60);
        Assert.Equal(HttpStatusCode.Unauthorized, (await Send(host, "2001:db8:aa:bb::1", "wrong-key-0123456789")).Status);
        Assert.Equal(HttpStatusCode.Unauthorized, (await Send(host, "2001:db8:aa:bb::2", "wrong-key-0123456789")).Status);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await Send(host, "2001:db8:aa:bb:ffff::9", LedgerHost.ReadKey)).Status);
        Assert.Equal(HttpStatusCode.OK, (await Send(host, "2001:db8:aa:bc::1", LedgerHost.ReadKey)).Status);
    }

    [Fact]
    public async Task behind_a_configured_proxy_the_client_it_forwards_is_counted()
    {
        await using var host = await Throttling(limit: 2, windowSeconds: 60, new() { ["Ledger:ForwardedHeaders:KnownProxies:0"] = "10.0.0.5" });
        Dictionary<string, string> From(string client) => new() { ["X-Forwarded-For"] = client };
        for (var i = 0; i < 2; i++) Assert.Equal(HttpStatusCode.Unauthorized, (await Send(host, "10.0.0.5", "wrong-key-0123456789", headers: From("203.0.113.7"))).Status);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await Send(host, "10.0.0.5", LedgerHost.ReadKey, headers: From("203.0.113.7"))).Status);
        // Another client behind the same proxy, and the proxy's own address, are not concerned.
        Assert.Equal(HttpStatusCode.OK, (await Send(host, "10.0.0.5", LedgerHost.ReadKey, headers: From("203.0.113.8"))).Status);
        Assert.Equal(HttpStatusCode.OK, (await Send(host, "10.0.0.5", LedgerHost.ReadKey)).Status);
        // A sender that is not the proxy cannot pick its own address with the header.
        for (var i = 0; i < 2; i++) await Send(host, "192.0.2.77", "wrong-key-0123456789", headers: From($"203.0.113.{100 + i}"));
        Assert.Equal(HttpStatusCode.TooManyRequests, (await Send(host, "192.0.2.77", LedgerHost.ReadKey, headers: From("203.0.113.200"))).Status);
    }
}

/// <summary>
/// The console's cookies are Secure whenever the browser used HTTPS: directly, or through a
/// configured proxy that says so (X-Forwarded-Proto); the header of anybody else is ignored, and
/// plain HTTP (the docker-compose setup) keeps cookies that work over HTTP.
/// </summary>
public sealed class SecureCookieTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private static async Task<IReadOnlyList<string>> SignInFrom(IAlbaHost host, string client, string? forwardedProto)
    {
        var browser = new ConsoleClient(host);
        browser.Headers[ClientAddressFromHeader.Header] = client;
        if (forwardedProto is not null) browser.Headers["X-Forwarded-Proto"] = forwardedProto;
        Assert.Equal(HttpStatusCode.Redirect, await browser.SignIn(LedgerHost.ReadKey));
        var cookies = browser.LastSetCookies.Where(c => c.StartsWith("ledger-session=", StringComparison.Ordinal)).ToList();
        Assert.Single(cookies);
        // The session works over the same way in.
        Assert.Equal(HttpStatusCode.OK, (await browser.Send(HttpMethod.Get, "/runs")).Status);
        return cookies;
    }

    private static bool Secure(string setCookie) => setCookie.Split(';').Any(p => p.Trim().Equals("secure", StringComparison.OrdinalIgnoreCase));

    [Fact]
    public async Task https_at_a_configured_proxy_makes_the_session_cookie_secure_and_nobody_else_can_say_so()
    {
        await using var proxied = await ledger.SecondInstance(new Dictionary<string, string>
        {
            ["Ledger:ForwardedHeaders:KnownProxies:0"] = "10.0.0.5",
            ["Ledger:DaemonMode"] = "Disabled",
        }, ClientAddressFromHeader.AddTo);
        Assert.True(Secure((await SignInFrom(proxied, "10.0.0.5", "https")).Single()));
        Assert.False(Secure((await SignInFrom(proxied, "10.0.0.5", "http")).Single()));
        Assert.False(Secure((await SignInFrom(proxied, "10.0.0.6", "https")).Single()));
    }

    [Fact]
    public async Task without_configured_proxies_the_header_is_ignored_and_plain_http_keeps_working()
    {
        await using var plain = await ledger.SecondInstance(new Dictionary<string, string> { ["Ledger:DaemonMode"] = "Disabled" }, ClientAddressFromHeader.AddTo);
        Assert.False(Secure((await SignInFrom(plain, "10.0.0.5", "https")).Single()));
        Assert.False(Secure((await SignInFrom(plain, "172.17.0.1", null)).Single()));
    }
}
