using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.RegularExpressions;

namespace Ledger.Tests.Infrastructure;

/// <summary>
/// The first thing an operator reads is the log of a start and a stop. Started as
/// <c>dotnet run --project src/Ledger</c> starts it (no arguments, the launch profile's address
/// and Development), on a private PostgreSQL of its own, used, then stopped with SIGTERM: the log
/// holds no warning that is not true, no stack trace, and the cluster is stopped after the
/// ledger's own connections (stopping it under them was a 57P01 stack trace).
/// </summary>
public sealed class CleanStartStopTests
{
    /// <summary>The one warning a first start gives, and it is true (README, "Console": the keys are stored unencrypted).</summary>
    private static readonly string[] TrueWarnings = ["Microsoft.AspNetCore.DataProtection.KeyManagement.XmlKeyManager[35]"];

    [Fact]
    public async Task a_clean_start_and_stop_log_no_false_warning_and_no_stack_trace()
    {
        using var cluster = new PrivateCluster();
        var port = Readme.ReadmeLedger.FreePort();
        var env = new Dictionary<string, string?>
        {
            // What `dotnet run --project src/Ledger` sets through its launch profile.
            ["LEDGER_DEFAULT_ENVIRONMENT"] = "Development",
            ["ASPNETCORE_URLS"] = $"http://127.0.0.1:{port}",
            ["Ledger__EmbeddedPostgres__Port"] = cluster.Port.ToString(),
            ["Ledger__EmbeddedPostgres__DataDirectory"] = cluster.DataDirectory,
        };
        var cwd = Directory.CreateTempSubdirectory("ledger-clean-").FullName;
        try
        {
            using var service = LedgerProcess.Start(env, [], cwd);
            var address = await service.WaitForAddress(TimeSpan.FromSeconds(120));
            await RankedVerdict(address);
            // A query value that is not an integer: refused before any endpoint (the warning said it would bind 0).
            using (var http = new HttpClient())
            {
                http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "dev-read-key");
                Assert.Equal((HttpStatusCode)422, (await http.GetAsync($"{address}/api/runs?page=abc")).StatusCode);
            }

            var stopped = service.Terminate(TimeSpan.FromSeconds(60));
            var log = stopped.Stdout + stopped.Stderr;
            Assert.True(stopped.ExitCode == 0, stopped.All);
            Assert.DoesNotMatch(new Regex(@"^\s+at \S", RegexOptions.Multiline), log);
            Assert.DoesNotContain("Exception", log);
            Assert.DoesNotContain("57P01", log);
            Assert.DoesNotContain("Searching '", log);
            Assert.DoesNotContain("RejectUnparseableQueryValues", log);
            Assert.DoesNotMatch(new Regex("^(fail|crit):", RegexOptions.Multiline), log);
            var warnings = Regex.Matches(log, @"^warn: (\S+)", RegexOptions.Multiline).Select(m => m.Groups[1].Value).Distinct().ToList();
            Assert.True(warnings.All(TrueWarnings.Contains), "warnings: " + string.Join(", ", warnings) + "\n" + stopped.All);
            Assert.Contains($"Stopping the private PostgreSQL in {cluster.DataDirectory}", log);
            Assert.False(PrivateCluster.Listening(cluster.Port), stopped.All);
        }
        finally
        {
            Directory.Delete(cwd, recursive: true);
        }
    }

    /// <summary>A run that succeeds on a board: the verdict's NOTIFY wakes the projection leader's LISTEN connection.</summary>
    private static async Task RankedVerdict(string address)
    {
        using var http = new HttpClient { BaseAddress = new Uri(address) };
        async Task<string> Post(string path, string bearer, string json)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", bearer);
            using var response = await http.SendAsync(request);
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.IsSuccessStatusCode, $"{path} answered {(int)response.StatusCode}: {text}");
            return text;
        }

        var runId = $"clean-{Guid.NewGuid():N}";
        await Post("/api/boards", "dev-admin-key", """{"id":"clean-board","primaryScore":"accuracy","direction":"max"}""");
        await Post("/api/runs", "dev-admin-key", $$"""{"runId":"{{runId}}","board":"clean-board","participant":"a","requiredScores":["accuracy"]}""");
        var claim = await Post($"/api/runs/{runId}/claim", "dev-worker-key", """{"worker":"w"}""");
        var token = Regex.Match(claim, "\"leaseToken\":\"([^\"]+)\"").Groups[1].Value;
        var now = DateTimeOffset.UtcNow.ToString("O");
        await Post($"/api/runs/{runId}/events", token,
            "[{\"type\":\"scores.reported\",\"eventId\":\"s\",\"occurredAt\":\"" + now + "\",\"scores\":{\"accuracy\":0.5}}," +
            "{\"type\":\"run.completed\",\"eventId\":\"c\",\"occurredAt\":\"" + now + "\"}]");
        var deadline = DateTime.UtcNow.AddSeconds(60);
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "dev-read-key");
        while (!(await http.GetStringAsync("/api/boards/clean-board/leaderboard")).Contains(runId))
        {
            Assert.True(DateTime.UtcNow < deadline, "the verdict never reached the board");
            await Task.Delay(200);
        }
    }
}
