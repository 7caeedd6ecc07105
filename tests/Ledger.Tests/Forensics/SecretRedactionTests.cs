using System.Net;
using Ledger.Forensics;
using Ledger.Tests.Console;
using Ledger.Tests.Fixtures;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Ledger.Tests.Forensics;

/// <summary>
/// Nothing secret is kept in a rejection, an anomaly or a log line (invariant 10): a refused
/// subscription's webhook secret, whole, cut or malformed, is nowhere a read key or the log can see;
/// and rows kept before redaction existed are scrubbed at start.
/// </summary>
public sealed class SecretRedactionTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private static string NewSecret() => "whsec-" + Guid.NewGuid().ToString("N");

    /// <summary>Every place a read key, a read session or the log shows about refusals: none may hold <paramref name="secret"/>.</summary>
    private async Task AssertNowhere(Scenarios api, string secret, CapturedLogs logs)
    {
        var fragment = secret[..16];
        foreach (var url in new[] { "/api/rejections?pageSize=500", "/api/anomalies?pageSize=500" })
        {
            var page = await api.Send(HttpMethod.Get, url, LedgerHost.ReadKey);
            Assert.Equal(HttpStatusCode.OK, page.Status);
            Assert.DoesNotContain(fragment, page.Text);
        }
        var console = new ConsoleClient(ledger.Host);
        Assert.Equal(HttpStatusCode.Redirect, await console.SignIn(LedgerHost.ReadKey));
        foreach (var path in new[] { "/rejections", "/anomalies" })
        {
            var (status, html, _) = await console.Send(HttpMethod.Get, path);
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.DoesNotContain(fragment, html);
        }
        Assert.DoesNotContain(logs.Lines, l => l.Text.Contains(fragment, StringComparison.Ordinal));
        // Nor anywhere in the database's rejections and anomalies, whatever reads them.
        await using var connection = new NpgsqlConnection(ledger.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "select count(*) from ledger.mt_doc_rejection where data::text like @s or exists (select 1 from ledger.mt_doc_anomalyrecord where data::text like @s)", connection);
        command.Parameters.AddWithValue("s", $"%{fragment}%");
        Assert.Equal(0L, (long)(await command.ExecuteScalarAsync())!);
    }

    private async Task<(Scenarios Api, CapturedLogs Logs, Alba.IAlbaHost Instance)> LoggedInstance()
    {
        var logs = new CapturedLogs();
        var instance = await ledger.SecondInstance(services => services.AddSingleton<ILoggerProvider>(logs));
        return (new Scenarios(ledger, instance), logs, instance);
    }

    [Fact]
    public async Task a_subscription_refused_for_a_misspelled_kind_keeps_its_reason_but_its_secret_nowhere()
    {
        var (api, logs, instance) = await LoggedInstance();
        await using var _ = instance;
        var secret = NewSecret();

        var refused = await api.Send(HttpMethod.Post, "/api/subscriptions", LedgerHost.AdminKey,
            new { url = "https://hooks.example.com/services/T0/B0/capability", kinds = new[] { "run.succeded" }, secret });

        Assert.Equal(HttpStatusCode.UnprocessableEntity, refused.Status);
        var page = await api.Send(HttpMethod.Get, "/api/rejections?reason=invalid-payload&pageSize=500", LedgerHost.ReadKey);
        var kept = page.Json!["items"]!.AsArray().Single(r => r!["payload"]?.GetValue<string>().Contains("run.succeded") == true)!;
        Assert.Equal("/api/subscriptions", kept["path"]!.GetValue<string>());
        Assert.Contains($"\"secret\":\"{Redaction.Mark}\"", kept["payload"]!.GetValue<string>());
        Assert.Contains($"https://hooks.example.com/{Redaction.Mark}", kept["payload"]!.GetValue<string>());
        Assert.DoesNotContain("capability", kept["payload"]!.GetValue<string>());
        Assert.Equal(Redaction.Version, kept["redaction"]!.GetValue<int>());
        await AssertNowhere(api, secret, logs);
    }

    [Fact]
    public async Task a_refused_subscription_cut_at_the_payload_limit_keeps_no_part_of_its_secret()
    {
        var (api, logs, instance) = await LoggedInstance();
        await using var _ = instance;
        var secret = NewSecret() + new string('s', 560);
        // The secret straddles the 8 KiB the rejection log keeps: cut first, its first half would be kept.
        var kinds = Enumerable.Range(0, 1140).Select(i => $"k{i}").ToArray();
        var body = System.Text.Json.JsonSerializer.Serialize(new { kinds, secret, url = "https://example.com/" });
        Assert.InRange(body.IndexOf(secret, StringComparison.Ordinal), 7_700, 8_150);
        Assert.True(body.IndexOf(secret, StringComparison.Ordinal) + secret.Length > 8 * 1024);

        var refused = await api.Send(HttpMethod.Post, "/api/subscriptions", LedgerHost.AdminKey, rawBody: body);

        Assert.Equal(HttpStatusCode.UnprocessableEntity, refused.Status);
        await AssertNowhere(api, secret, logs);
    }

    [Theory]
    [InlineData("""{"url":"https://example.com/","kinds":["run.lost"],"secret":"SECRET" "anomalyKinds":[]}""")]
    [InlineData("""{"url":"https://example.com/","kinds":["run.lost"],"secret":"SECRET""")]
    [InlineData("""url=https://example.com/&kinds=run.lost&secret=SECRET""")]
    public async Task a_malformed_subscription_body_keeps_no_secret_though_it_did_not_parse(string template)
    {
        var (api, logs, instance) = await LoggedInstance();
        await using var _ = instance;
        var secret = NewSecret();

        var refused = await api.Send(HttpMethod.Post, "/api/subscriptions", LedgerHost.AdminKey, rawBody: template.Replace("SECRET", secret));

        Assert.Equal(HttpStatusCode.BadRequest, refused.Status);
        Assert.Equal("malformed-json", refused.ProblemCode);
        await AssertNowhere(api, secret, logs);
    }

    [Theory]
    [InlineData("""
        "{\"url\":\"https://example.com/\",\"kinds\":[\"run.lots\"],\"secret\":\"SECRET\"}"
        """)]
    [InlineData("""["https://example.com/", "SECRET"]""")]
    public async Task a_subscription_body_that_is_not_an_object_keeps_no_secret(string template)
    {
        // The body encoded twice (a string of JSON), or a bare array: valid JSON that names no field.
        var (api, logs, instance) = await LoggedInstance();
        await using var _ = instance;
        var secret = NewSecret();

        var refused = await api.Send(HttpMethod.Post, "/api/subscriptions", LedgerHost.AdminKey, rawBody: template.Replace("SECRET", secret));

        Assert.InRange(refused.Code, 400, 499);
        await AssertNowhere(api, secret, logs);
        var kept = (await api.Send(HttpMethod.Get, "/api/rejections?pageSize=500", LedgerHost.ReadKey)).Json!["items"]!.AsArray();
        Assert.Contains(kept, r => r!["payload"]?.GetValue<string>().Contains("not a JSON object") == true);
    }

    [Fact]
    public async Task a_refused_claim_keeps_its_worker_but_not_its_claim_id_nor_the_key()
    {
        var (api, logs, instance) = await LoggedInstance();
        await using var _ = instance;
        var claimId = "claim-" + Guid.NewGuid().ToString("N");
        var runId = await api.Register(new { runId = Scenarios.NewRunId("redact-claim") });
        await api.Send(HttpMethod.Post, $"/api/runs/{runId}/cancel", LedgerHost.AdminKey);

        var refused = await api.Send(HttpMethod.Post, $"/api/runs/{runId}/claim", LedgerHost.WorkerKey, new { worker = "w-7", claimId });

        Assert.Equal(HttpStatusCode.Conflict, refused.Status);
        var kept = (await api.Send(HttpMethod.Get, $"/api/rejections?runId={runId}", LedgerHost.ReadKey)).Json!["items"]!.AsArray().Single()!;
        Assert.Equal("w-7", kept["worker"]!.GetValue<string>());
        Assert.Contains("\"worker\":\"w-7\"", kept["payload"]!.GetValue<string>());
        await AssertNowhere(api, claimId, logs);
        // The caller is named by the start of its key's digest, never by the key.
        Assert.Equal(Ledger.Infrastructure.Access.DigestHex(LedgerHost.WorkerKey)[..16], kept["caller"]!.GetValue<string>());
    }

    [Fact]
    public async Task refusals_kept_before_redaction_are_scrubbed_at_start_once_and_the_scrub_says_how_many()
    {
        // As an earlier version kept them: the payload as sent (cut at 8 KiB), no redaction revision.
        var secret = NewSecret();
        var cut = NewSecret();
        var rows = new[]
        {
            Seeded("/api/subscriptions", $$"""{"url":"https://example.com/","kinds":["run.succeded"],"secret":"{{secret}}"}""", "Unknown kind."),
            Seeded("/api/subscriptions", $$"""{"url":"https://example.com/","kinds":["x"],"secret":"{{cut[..20]}}""", "Cut."),
            Seeded("/api/runs", """{"runId":"kept-as-it-was"}""", "Nothing secret."),
        };
        var store = ledger.Host.Services.GetRequiredService<IDocumentStore>();
        await using (var session = store.LightweightSession())
        {
            foreach (var row in rows)
            {
                session.Store(row);
                session.Store(AnomalyRecord.From(row));
            }
            await session.SaveChangesAsync();
        }
        await using (var connection = new NpgsqlConnection(ledger.ConnectionString))
        {
            await connection.OpenAsync();
            // Rows of the earlier version have neither the member nor the column.
            await using var old = new NpgsqlCommand("update ledger.mt_doc_rejection set redaction = null, data = data - 'redaction' where id = any(@ids)", connection);
            old.Parameters.AddWithValue("ids", rows.Select(r => r.Id).ToArray());
            Assert.Equal(3, await old.ExecuteNonQueryAsync());
        }

        var logs = new CapturedLogs();
        await using (var restarted = await ledger.SecondInstance(services => services.AddSingleton<ILoggerProvider>(logs)))
        {
            Assert.Contains(logs.Lines, l => l.Category.EndsWith(nameof(RejectionScrub), StringComparison.Ordinal) && l.Text.StartsWith("Scrubbed 2 of 3 stored refusals", StringComparison.Ordinal));
            var api = new Scenarios(ledger, restarted);
            await AssertNowhere(api, secret, logs);
            await AssertNowhere(api, cut, logs);
        }
        await using (var session = store.QuerySession())
        {
            var scrubbed = await session.LoadManyAsync<Rejection>(rows.Select(r => r.Id).ToArray());
            Assert.All(scrubbed, r => Assert.Equal(Redaction.Version, r.Redaction));
            Assert.Equal("""{"runId":"kept-as-it-was"}""", scrubbed.Single(r => r.Id == rows[2].Id).Payload);
        }

        // Once scrubbed, a start finds nothing to do and says nothing.
        var again = new CapturedLogs();
        await using (await ledger.SecondInstance(services => services.AddSingleton<ILoggerProvider>(again)))
        {
            Assert.DoesNotContain(again.Lines, l => l.Category.EndsWith(nameof(RejectionScrub), StringComparison.Ordinal));
        }
        Assert.Equal(new ScrubResult(0, 0), await ledger.Host.Services.GetRequiredService<RejectionScrub>().ScrubAsync(CancellationToken.None));
    }

    private Rejection Seeded(string path, string payload, string detail) => new()
    {
        Id = Guid.CreateVersion7(),
        At = ledger.Clock.GetUtcNow(),
        Reason = "invalid-payload",
        HttpStatus = 422,
        Detail = detail,
        Method = "POST",
        Path = path,
        Payload = payload,
    };
}
