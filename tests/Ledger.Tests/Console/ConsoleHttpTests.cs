using System.Net;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Alba;
using Ledger.Tests.Fixtures;
using Marten;
using Microsoft.Extensions.DependencyInjection;

namespace Ledger.Tests.Console;

/// <summary>A browser's view of the console over plain HTTP: cookies kept by hand, the form's token read from the page.</summary>
public sealed class ConsoleClient(IAlbaHost host)
{
    private readonly HttpClient _http = host.Server.CreateClient();
    private readonly Dictionary<string, string> _cookies = new();

    public string? Cookie(string name) => _cookies.GetValueOrDefault(name);

    /// <summary>Headers sent with every request (e.g. X-Forwarded-Proto).</summary>
    public Dictionary<string, string> Headers { get; } = new();

    /// <summary>The Set-Cookie headers of the last answer that set any.</summary>
    public IReadOnlyList<string> LastSetCookies { get; private set; } = [];

    public void Use(ConsoleClient other)
    {
        foreach (var (name, value) in other._cookies) _cookies[name] = value;
    }

    public async Task<(HttpStatusCode Status, string Body, HttpResponseMessage Response)> Send(HttpMethod method, string url,
        Dictionary<string, string>? form = null)
    {
        using var request = new HttpRequestMessage(method, url);
        if (_cookies.Count > 0) request.Headers.Add("Cookie", string.Join("; ", _cookies.Select(c => $"{c.Key}={c.Value}")));
        if (form is not null) request.Content = new FormUrlEncodedContent(form);
        foreach (var (name, value) in Headers) request.Headers.Add(name, value);
        var response = await _http.SendAsync(request);
        if (response.Headers.TryGetValues("Set-Cookie", out var setCookies))
        {
            LastSetCookies = setCookies.ToList();
            foreach (var header in setCookies)
            {
                var pair = header.Split(';')[0].Split('=', 2);
                if (header.Contains("expires=Thu, 01 Jan 1970", StringComparison.OrdinalIgnoreCase)) _cookies.Remove(pair[0]);
                else _cookies[pair[0]] = pair[1];
            }
        }
        return (response.StatusCode, await response.Content.ReadAsStringAsync(), response);
    }

    /// <summary>The antiforgery field of the page at <paramref name="url"/>: (name, value).</summary>
    public async Task<(string Name, string Value)> Token(string url = "/")
    {
        var (_, body, _) = await Send(HttpMethod.Get, url);
        var match = Regex.Match(body, "<input type=\"hidden\" name=\"([^\"]+)\" value=\"([^\"]+)\"");
        Assert.True(match.Success, $"no form token on {url}");
        return (match.Groups[1].Value, WebUtility.HtmlDecode(match.Groups[2].Value));
    }

    public async Task<HttpStatusCode> SignIn(string key)
    {
        var (name, value) = await Token();
        var (status, _, _) = await Send(HttpMethod.Post, "/sign-in", new() { [name] = value, ["key"] = key });
        return status;
    }
}

public sealed class ConsoleHttpTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    [Fact]
    public async Task without_a_session_console_pages_send_the_reader_to_the_sign_in_form()
    {
        var client = new ConsoleClient(ledger.Host);
        foreach (var path in new[] { "/runs", "/runs/x", "/anomalies", "/kpis", "/rejections", "/boards/b", "/batches/b" })
        {
            var (status, _, response) = await client.Send(HttpMethod.Get, path);
            Assert.Equal(HttpStatusCode.Redirect, status);
            Assert.Equal("/", response.Headers.Location?.ToString());
        }
        var (ok, body, page) = await client.Send(HttpMethod.Get, "/");
        Assert.Equal(HttpStatusCode.OK, ok);
        Assert.Contains("name=\"key\"", body);
        var csp = page.Headers.GetValues("Content-Security-Policy").Single();
        Assert.Contains("default-src 'none'", csp);
        Assert.DoesNotContain("unsafe-inline", csp);
    }

    [Fact]
    public async Task a_session_opened_on_one_node_works_on_another_and_after_a_restart_because_the_keys_are_in_postgresql()
    {
        var first = new ConsoleClient(ledger.Host);
        Assert.Equal(HttpStatusCode.Redirect, await first.SignIn(LedgerHost.AdminKey));
        Assert.NotNull(first.Cookie("ledger-session"));
        Assert.DoesNotContain(LedgerHost.AdminKey, first.Cookie("ledger-session")!);
        var (name, value) = await first.Token("/runs");

        await using (var session = ledger.Host.Services.GetRequiredService<IDocumentStore>().QuerySession())
        {
            Assert.NotEmpty(await session.Query<Ledger.Web.DataProtectionKey>().ToListAsync());
        }

        // Another node on the same database (a restart is the same thing: a fresh process, no keys in memory).
        await using var other = await ledger.SecondInstance();
        var second = new ConsoleClient(other);
        second.Use(first);
        var (status, body, _) = await second.Send(HttpMethod.Get, "/runs");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Contains("Signed in: admin", body);
        // The form token issued by the first node is honoured by the second.
        var (signedOut, _, response) = await second.Send(HttpMethod.Post, "/sign-out", new() { [name] = value });
        Assert.Equal(HttpStatusCode.Redirect, signedOut);
        Assert.Equal("/", response.Headers.Location?.ToString());
    }

    [Fact]
    public async Task console_refusals_are_html_and_api_refusals_stay_problem_details()
    {
        var client = new ConsoleClient(ledger.Host);
        await client.SignIn(LedgerHost.ReadKey);
        var (status, body, response) = await client.Send(HttpMethod.Get, "/runs?board=%01");
        Assert.Equal(HttpStatusCode.UnprocessableEntity, status);
        Assert.Equal("text/html", response.Content.Headers.ContentType?.MediaType);
        Assert.Contains("board", body);

        (status, _, response) = await client.Send(HttpMethod.Get, "/api/runs?board=%01");
        Assert.Equal(HttpStatusCode.Unauthorized, status);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);

        (status, _, response) = await client.Send(HttpMethod.Delete, "/runs");
        Assert.Equal(HttpStatusCode.MethodNotAllowed, status);
        Assert.Equal("text/html", response.Content.Headers.ContentType?.MediaType);

        // A post without the session's form token changes nothing.
        (status, body, _) = await client.Send(HttpMethod.Post, "/sign-out", new() { ["x"] = "y" });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("antiforgery", body);
    }

    [Fact]
    public async Task a_post_that_is_not_a_small_form_is_an_html_400_never_a_500()
    {
        var client = new ConsoleClient(ledger.Host);
        var (name, value) = await client.Token();
        var http = ledger.Host.Server.CreateClient();
        using var json = new HttpRequestMessage(HttpMethod.Post, "/sign-in") { Content = new StringContent("{\"key\":\"x\"}", System.Text.Encoding.UTF8, "application/json") };
        var response = await http.SendAsync(json);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("text/html", response.Content.Headers.ContentType?.MediaType);

        // Refused as an unreadable form (400) where the form limits apply, else as no key of this ledger (401).
        var (status, _, huge) = await client.Send(HttpMethod.Post, "/sign-in", new() { [name] = value, ["key"] = new string('k', 100_000) });
        Assert.True(status is HttpStatusCode.BadRequest or HttpStatusCode.Unauthorized, status.ToString());
        Assert.Equal("text/html", huge.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task the_api_lists_runs_by_label_time_range_and_stuck_for_seconds()
    {
        var api = new Scenarios(ledger);
        var tag = Guid.NewGuid().ToString("N")[..8];
        var eu = await api.Register(new { runId = Scenarios.NewRunId("eu"), labels = new { region = "EU", tag } });
        await api.Register(new { runId = Scenarios.NewRunId("us"), labels = new { region = "US", tag } });
        var registered = api.Now;
        ledger.Clock.Advance(TimeSpan.FromMinutes(1));
        var stuck = await api.Register(new { runId = Scenarios.NewRunId("stuck"), labels = new { tag }, leaseSeconds = 3600 });
        var alive = await api.Register(new { runId = Scenarios.NewRunId("alive"), labels = new { tag }, leaseSeconds = 3600 });
        await api.Claim(stuck);
        var token = await api.Claim(alive);
        ledger.Clock.Advance(TimeSpan.FromMinutes(10));
        await api.Events(alive, token, new { eventId = "hb", type = "heartbeat", occurredAt = api.Now });

        async Task<string[]> Ids(string query, string? label = null)
        {
            var response = await api.Send(HttpMethod.Get, $"/api/runs?label={label ?? $"tag:{tag}"}&{query}", LedgerHost.ReadKey);
            Assert.True(response.Status == HttpStatusCode.OK, response.Text);
            return response.Json!["items"]!.AsArray().Select(i => i!["runId"]!.GetValue<string>()).ToArray();
        }

        Assert.Equal([eu], await Ids("pageSize=10", label: "region:EU"));
        Assert.Equal(4, (await Ids("")).Length);
        Assert.Equal(2, (await Ids($"to={Uri.EscapeDataString(registered.AddSeconds(1).ToString("O"))}")).Length);
        Assert.Equal(2, (await Ids($"from={Uri.EscapeDataString(registered.AddSeconds(30).ToString("O"))}")).Length);
        Assert.Equal([stuck], await Ids("stuckFor=300"));
        Assert.Empty(await Ids("stuckFor=900"));

        var refused = await api.Send(HttpMethod.Get, "/api/runs?stuckFor=-1&label=nocolon&from=yesterday", LedgerHost.ReadKey);
        Assert.Equal(HttpStatusCode.UnprocessableEntity, refused.Status);
        var errors = refused.Json!["errors"]!.AsObject();
        Assert.True(errors.ContainsKey("stuckFor") && errors.ContainsKey("label") && errors.ContainsKey("from"), refused.Text);
    }

    [Fact]
    public async Task kpis_over_time_count_registrations_verdicts_and_anomalies_per_bucket()
    {
        var api = new Scenarios(ledger);
        var (runId, token) = await api.Started(new { runId = Scenarios.NewRunId("kpi"), requiredScores = new[] { "accuracy" } });
        await api.Events(runId, token, new { eventId = "done", type = "run.completed", occurredAt = api.Now });
        await api.Send(HttpMethod.Post, $"/api/runs/{runId}/cancel", LedgerHost.AdminKey, new { reason = "test" });

        var response = await api.Send(HttpMethod.Get, "/api/kpis/series?bucket=hour", LedgerHost.ReadKey);
        Assert.True(response.Status == HttpStatusCode.OK, response.Text);
        var buckets = response.Json!["buckets"]!.AsArray();
        Assert.Equal(48, buckets.Count); // the current hour and the 47 before it
        var now = buckets[^1]!;
        Assert.True(now["registered"]!.GetValue<long>() >= 1);
        Assert.True(now["cancelled"]!.GetValue<long>() >= 1);
        Assert.True(now["anomalies"]!.GetValue<long>() >= 1);

        Assert.Equal(30, (await api.Send(HttpMethod.Get, "/api/kpis/series", LedgerHost.ReadKey)).Json!["buckets"]!.AsArray().Count);
        Assert.Equal(HttpStatusCode.UnprocessableEntity, (await api.Send(HttpMethod.Get, "/api/kpis/series?bucket=week", LedgerHost.ReadKey)).Status);
        Assert.Equal(HttpStatusCode.UnprocessableEntity,
            (await api.Send(HttpMethod.Get, "/api/kpis/series?bucket=hour&from=2000-01-01T00:00:00Z", LedgerHost.ReadKey)).Status);
        Assert.Equal(HttpStatusCode.Unauthorized, (await api.Send(HttpMethod.Get, "/api/kpis/series", null)).Status);
    }
}

/// <summary>Sign-in attempts are limited per client address (10 a minute by default), so keys cannot be guessed at speed.</summary>
public sealed class SignInRateLimitTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    [Fact]
    public async Task the_eleventh_attempt_in_a_minute_is_refused_with_an_html_429()
    {
        var client = new ConsoleClient(ledger.Host);
        for (var i = 0; i < 10; i++)
        {
            var (name, value) = await client.Token();
            var (status, body, _) = await client.Send(HttpMethod.Post, "/sign-in", new() { [name] = value, ["key"] = $"guess-{i}" });
            Assert.Equal(HttpStatusCode.Unauthorized, status);
            Assert.DoesNotContain($"guess-{i}", body);
        }
        var (limited, page, response) = await client.Send(HttpMethod.Post, "/sign-in", new() { ["key"] = LedgerHost.AdminKey });
        Assert.Equal(HttpStatusCode.TooManyRequests, limited);
        Assert.Equal("text/html", response.Content.Headers.ContentType?.MediaType);
        Assert.NotNull(response.Headers.RetryAfter);
        Assert.Contains("Too many sign-in attempts", page);
        Assert.Null(client.Cookie("ledger-session"));
    }
}
