using System.Net;
using Ledger.Infrastructure;
using Ledger.Tests.Fixtures;
using Ledger.Web;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace Ledger.Tests.Console;

/// <summary>
/// Console sessions are rows in PostgreSQL named by a token in the cookie: sign-out deletes the
/// row (a copied cookie dies with it, on every node), a session has an absolute lifetime beside
/// the sliding one, it ends when its key leaves the configuration, and the row keeps nothing a
/// database reader could sign in with.
/// </summary>
public sealed class ConsoleSessionTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    [Fact]
    public async Task a_cookie_copied_before_sign_out_opens_nothing_after_it_on_any_node()
    {
        var api = new Scenarios(ledger);
        var runId = await api.Register(new { runId = Scenarios.NewRunId("copied") });
        var admin = new ConsoleClient(ledger.Host);
        Assert.Equal(HttpStatusCode.Redirect, await admin.SignIn(LedgerHost.AdminKey));
        var (field, token) = await admin.Token($"/runs/{runId}");

        // The attacker's copy, taken while the session is live.
        var copy = new ConsoleClient(ledger.Host);
        copy.Use(admin);
        Assert.Equal(HttpStatusCode.OK, (await copy.Send(HttpMethod.Get, "/runs")).Status);

        var (signedOut, _, _) = await admin.Send(HttpMethod.Post, "/sign-out", new() { [field] = token });
        Assert.Equal(HttpStatusCode.Redirect, signedOut);

        var (status, _, response) = await copy.Send(HttpMethod.Get, "/runs");
        Assert.Equal(HttpStatusCode.Redirect, status);
        Assert.Equal("/", response.Headers.Location?.ToString());
        var (cancel, body, _) = await copy.Send(HttpMethod.Post, $"/runs/{runId}/cancel", new() { [field] = token, ["reason"] = "replayed cookie" });
        Assert.Equal(HttpStatusCode.Unauthorized, cancel);
        Assert.Contains("Sign in first", body);
        Assert.Equal("registered", (await api.Send(HttpMethod.Get, $"/api/runs/{runId}", LedgerHost.ReadKey)).Json!["status"]!.GetValue<string>());

        // Nor on another node: the row is gone from the database they share.
        await using var other = await ledger.SecondInstance();
        var elsewhere = new ConsoleClient(other);
        elsewhere.Use(copy);
        Assert.Equal(HttpStatusCode.Redirect, (await elsewhere.Send(HttpMethod.Get, "/runs")).Status);
    }

    [Fact]
    public async Task a_session_signed_out_on_one_node_ends_on_the_other()
    {
        var first = new ConsoleClient(ledger.Host);
        Assert.Equal(HttpStatusCode.Redirect, await first.SignIn(LedgerHost.ReadKey));
        await using var other = await ledger.SecondInstance();
        var second = new ConsoleClient(other);
        second.Use(first);
        var (field, token) = await second.Token("/runs");
        Assert.Equal(HttpStatusCode.Redirect, (await second.Send(HttpMethod.Post, "/sign-out", new() { [field] = token })).Status);
        Assert.Equal(HttpStatusCode.Redirect, (await first.Send(HttpMethod.Get, "/runs")).Status);
    }

    [Fact]
    public async Task the_row_keeps_the_role_and_a_salted_digest_never_the_key_its_digest_or_the_cookie_token()
    {
        var client = new ConsoleClient(ledger.Host);
        var before = await Rows();
        Assert.Equal(HttpStatusCode.Redirect, await client.SignIn(LedgerHost.AdminKey));
        var row = Assert.Single((await Rows()).ExceptBy(before.Select(r => r.Id), r => r.Id));
        Assert.Equal(Role.Admin, row.Role);
        Assert.Equal(ledger.Clock.GetUtcNow().AddMinutes(720), row.ExpiresAt, TimeSpan.FromMinutes(1));
        Assert.Equal(ledger.Clock.GetUtcNow().AddMinutes(480), row.IdleExpiresAt, TimeSpan.FromMinutes(1));

        // The stored text of the row: no key, no bare SHA-256 of it (upper or lower case, hex or base64).
        var digest = Access.Digest(LedgerHost.AdminKey);
        var text = await RowText(row.Id);
        foreach (var secret in new[] { LedgerHost.AdminKey, Convert.ToHexStringLower(digest), Convert.ToHexString(digest), Convert.ToBase64String(digest) })
        {
            Assert.DoesNotContain(secret, text, StringComparison.Ordinal);
        }
        // The cookie does not name the row: the row is found by a digest of a token the cookie hides.
        Assert.DoesNotContain(row.Id, client.Cookie(ConsoleSetup.SessionCookie)!, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task removing_a_key_from_the_configuration_ends_the_sessions_opened_with_it()
    {
        var client = new ConsoleClient(ledger.Host);
        Assert.Equal(HttpStatusCode.Redirect, await client.SignIn(LedgerHost.ReadKey));
        await using var rotated = await ledger.SecondInstance(new Dictionary<string, string> { ["Ledger:ReadKeys:0"] = "another-read-key-entirely" });
        var after = new ConsoleClient(rotated);
        after.Use(client);
        Assert.Equal(HttpStatusCode.Redirect, (await after.Send(HttpMethod.Get, "/runs")).Status);
    }

    private async Task<IReadOnlyList<ConsoleSessionRecord>> Rows()
    {
        await using var session = ledger.Host.Services.GetRequiredService<IDocumentStore>().QuerySession();
        return await session.Query<ConsoleSessionRecord>().ToListAsync();
    }

    private async Task<string> RowText(string id)
    {
        await using var connection = new NpgsqlConnection(ledger.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("select data::text from ledger.mt_doc_consolesessionrecord where id = @id", connection);
        command.Parameters.AddWithValue("id", id);
        return (string)(await command.ExecuteScalarAsync())!;
    }
}

/// <summary>The lifetimes, on a host of their own (they move its clock): sliding, absolute, and the clean-up of rows past them.</summary>
public sealed class ConsoleSessionLifetimeTests : IAsyncLifetime
{
    private readonly LedgerHost _ledger = LedgerHost.With(new Dictionary<string, string>
    {
        ["Ledger:Console:SessionMinutes"] = "30",
        ["Ledger:Console:SessionAbsoluteMinutes"] = "60",
    });

    public Task InitializeAsync() => _ledger.InitializeAsync();

    public Task DisposeAsync() => _ledger.DisposeAsync();

    [Fact]
    public async Task a_session_used_every_ten_minutes_still_ends_at_its_absolute_lifetime()
    {
        var client = new ConsoleClient(_ledger.Host);
        Assert.Equal(HttpStatusCode.Redirect, await client.SignIn(LedgerHost.ReadKey));
        for (var minutes = 10; minutes <= 50; minutes += 10)
        {
            _ledger.Clock.Advance(TimeSpan.FromMinutes(10));
            var (status, _, _) = await client.Send(HttpMethod.Get, "/runs");
            Assert.True(status == HttpStatusCode.OK, $"{status} after {minutes} minutes of use");
        }
        _ledger.Clock.Advance(TimeSpan.FromMinutes(11));
        var (ended, _, response) = await client.Send(HttpMethod.Get, "/runs");
        Assert.Equal(HttpStatusCode.Redirect, ended);
        Assert.Equal("/", response.Headers.Location?.ToString());
    }

    [Fact]
    public async Task an_idle_session_ends_after_the_sliding_lifetime_and_rows_past_their_end_are_deleted_at_the_next_sign_in()
    {
        var idle = new ConsoleClient(_ledger.Host);
        Assert.Equal(HttpStatusCode.Redirect, await idle.SignIn(LedgerHost.AdminKey));
        _ledger.Clock.Advance(TimeSpan.FromMinutes(31));
        Assert.Equal(HttpStatusCode.Redirect, (await idle.Send(HttpMethod.Get, "/runs")).Status);

        var abandoned = new ConsoleClient(_ledger.Host);
        Assert.Equal(HttpStatusCode.Redirect, await abandoned.SignIn(LedgerHost.ReadKey));
        _ledger.Clock.Advance(TimeSpan.FromMinutes(61));
        Assert.Equal(HttpStatusCode.Redirect, await new ConsoleClient(_ledger.Host).SignIn(LedgerHost.ReadKey));

        await using var session = _ledger.Host.Services.GetRequiredService<IDocumentStore>().QuerySession();
        var rows = await session.Query<ConsoleSessionRecord>().ToListAsync();
        var now = _ledger.Clock.GetUtcNow();
        Assert.Single(rows);
        Assert.All(rows, r => Assert.True(r.ExpiresAt > now && r.IdleExpiresAt > now));
    }
}
