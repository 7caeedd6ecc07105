using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.RegularExpressions;
using Ledger.Tests.Fixtures;
using Npgsql;

namespace Ledger.Tests.Infrastructure;

/// <summary>
/// verify, export --since and rebuild as an operator runs them with their output redirected (a
/// log file, a pipe): plain progress lines on standard error (done, rate, time left), no terminal
/// escapes, and the command's own output on standard output as before; and verify on a terminal,
/// where Spectre.Console's display shows the same stages instead of the plain lines.
/// </summary>
public sealed class LongWorkProgressTests
{
    private const string AdminKey = "progress-test-admin-key";

    private static readonly Regex Periodic = new(@"^(?<command>[a-z]+): (?<stage>.+?): [\d,]+ of [\d,]+ (?<unit>[a-z]+) \(\d+%\)(, [\d,]+ \k<unit>/s)?(, about .+ left)?$");
    private static readonly Regex Finished = new(@"^(?<command>[a-z]+): (?<stage>.+?): [\d,]+ (?<unit>[a-z]+) in [\d.]+ s(, [\d,]+ \k<unit>/s)?$");

    [Fact]
    public async Task long_commands_print_plain_progress_lines_when_their_output_is_redirected()
    {
        var (server, database, name) = TestDatabase.Create();
        var cwd = Directory.CreateTempSubdirectory("ledger-progress-").FullName;
        try
        {
            var env = new Dictionary<string, string?>
            {
                ["ASPNETCORE_ENVIRONMENT"] = "Production",
                ["Ledger__AdminKey"] = AdminKey,
                ["ConnectionStrings__Ledger"] = database,
                ["Ledger__Janitor__Enabled"] = "false",
                // A line at every step: the test's workload is small.
                ["Ledger__Progress__IntervalSeconds"] = "0",
            };
            await Workload(env);

            var verify = LedgerProcess.Run(env, ["verify"], cwd);
            Assert.True(verify.ExitCode == 0, verify.All);
            Assert.Contains("verify: passed", verify.Stdout);
            AssertProgress(verify, "verify", ["fold every event", "write the rebuild", "compare with the live projections"]);

            // On a terminal (a pseudo-terminal of script(1)): Spectre.Console's display, not the plain lines.
            var onTerminal = await OnTerminal(env, "verify", cwd);
            Assert.True(onTerminal.ExitCode == 0, onTerminal.Output);
            Assert.Contains("verify: passed", onTerminal.Output);
            Assert.Contains("\u001b[", onTerminal.Output);
            foreach (var stage in new[] { "fold every event", "write the rebuild", "compare with the live projections" })
            {
                Assert.Contains(stage, onTerminal.Output);
            }
            Assert.Contains("100%", onTerminal.Output);
            Assert.DoesNotContain(onTerminal.Output.Split('\n'), l => Finished.IsMatch(l.Trim()) || Periodic.IsMatch(l.Trim()));

            var export = LedgerProcess.Run(env, ["export", "--since", "2000-01-01T00:00:00Z", "--out", "all.ndjson"], cwd);
            Assert.True(export.ExitCode == 0, export.All);
            var lines = File.ReadAllLines(Path.Combine(cwd, "all.ndjson"));
            AssertProgress(export, "export", ["events recorded since 2000-01-01 00:00:00Z"]);
            Assert.Contains($"export: events recorded since 2000-01-01 00:00:00Z: {lines.Length:N0} events in ", export.Stderr);

            var rebuild = LedgerProcess.Run(env, ["rebuild"], cwd);
            Assert.True(rebuild.ExitCode == 0, rebuild.All);
            AssertProgress(rebuild, "rebuild", ["Run", "Ledger.Runs.LeaseHolderProjection", "Standing"]);
            Assert.Contains("rebuild: Run, Ledger.Runs.LeaseHolderProjection, Standing rebuilt from", rebuild.Stdout);

            // The rebuild changed nothing that the events do not say.
            var again = LedgerProcess.Run(env, ["verify"], cwd);
            Assert.True(again.ExitCode == 0, again.All);
            Assert.Contains("rebuilt 12 run, 12 lease, 3 standing", again.Stdout);
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            TestDatabase.Drop(server, name);
            Directory.Delete(cwd, recursive: true);
        }
    }

    /// <summary>Each stage reported at least once while it ran and once when it ended, in plain lines, nothing else on standard error.</summary>
    private static void AssertProgress(LedgerProcess.Result result, string command, string[] stages)
    {
        Assert.False(result.Stderr.Contains('\u001b'), "terminal escapes on standard error: " + Regex.Escape(result.Stderr[..Math.Min(200, result.Stderr.Length)]));
        var lines = result.StderrLines.Where(l => l.StartsWith(command + ": ")).ToList();
        foreach (var stage in stages)
        {
            Assert.True(lines.Any(l => Periodic.Match(l) is { Success: true } m && m.Groups["stage"].Value == stage),
                $"no progress line for '{stage}':\n{result.Stderr}");
            Assert.True(lines.Any(l => Finished.Match(l) is { Success: true } m && m.Groups["stage"].Value == stage),
                $"no line saying '{stage}' ended:\n{result.Stderr}");
        }
        var other = result.StderrLines.Where(l => !Periodic.IsMatch(l) && !Finished.IsMatch(l) && !l.StartsWith("export: ") && !l.StartsWith("rebuild: ")).ToList();
        Assert.True(other.Count == 0, "standard error holds more than progress:\n" + string.Join("\n", other));
    }

    /// <summary>The command run on a pseudo-terminal (script(1)), as an operator at a shell runs it: what the terminal received.</summary>
    private static async Task<(int ExitCode, string Output)> OnTerminal(Dictionary<string, string?> env, string command, string cwd)
    {
        var line = $"'{LedgerProcess.DotnetHost()}' exec '{LedgerProcess.ServiceAssembly()}' {command}";
        var psi = LedgerProcess.StartInfo("script", ["-qefc", line, "/dev/null"], env, cwd);
        psi.RedirectStandardInput = true;
        // An operator's shell, not a CI job: Spectre.Console is not interactive where it sees one of these.
        foreach (var ci in new[] { "CI", "GITHUB_ACTIONS", "GITLAB_CI", "TF_BUILD", "JENKINS_URL", "TEAMCITY_VERSION", "TRAVIS", "APPVEYOR",
                     "BITBUCKET_REPO_OWNER", "BITBUCKET_REPO_SLUG", "bamboo_buildNumber", "BITRISE_BUILD_URL", "ContinuaCI.Version", "GO_SERVER_URL", "MYGET_ENVIRONMENT" })
        {
            psi.Environment.Remove(ci);
        }
        psi.Environment["TERM"] = "xterm-256color";
        psi.Environment["COLUMNS"] = "160";
        using var process = System.Diagnostics.Process.Start(psi)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        try
        {
            await process.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{command} on a terminal did not end within 90 s:\n{await output}");
        }
        return (process.ExitCode, await output + await error);
    }

    /// <summary>Twelve runs through the service, three of them ranked on a board, then SIGTERM.</summary>
    private static async Task Workload(Dictionary<string, string?> env)
    {
        using var service = LedgerProcess.Start(env, ["--urls", "http://127.0.0.1:0"], Directory.GetCurrentDirectory());
        using var http = new HttpClient { BaseAddress = new Uri(await service.WaitForAddress(TimeSpan.FromSeconds(90))) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", AdminKey);

        async Task<string> Post(string path, string json, HttpStatusCode expected, string? bearer = null)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
            if (bearer is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", bearer);
            using var response = await http.SendAsync(request);
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == expected, $"{path} answered {(int)response.StatusCode}: {text}");
            return text;
        }

        await Post("/api/boards", """{"id":"progress-board","primaryScore":"accuracy","direction":"max"}""", HttpStatusCode.Created);
        for (var i = 0; i < 12; i++)
        {
            var runId = $"progress-{i}-{Guid.NewGuid():N}";
            await Post("/api/runs", $$"""{"runId":"{{runId}}","board":"progress-board","participant":"team-{{i % 3}}","requiredScores":["accuracy"]}""", HttpStatusCode.Created);
            var claim = await Post($"/api/runs/{runId}/claim", """{"worker":"w"}""", HttpStatusCode.OK);
            var token = Regex.Match(claim, "\"leaseToken\":\"([^\"]+)\"").Groups[1].Value;
            var now = DateTimeOffset.UtcNow.ToString("O");
            await Post($"/api/runs/{runId}/events",
                "[{\"type\":\"scores.reported\",\"eventId\":\"s\",\"occurredAt\":\"" + now + "\",\"scores\":{\"accuracy\":0." + (i + 10) + "}}," +
                "{\"type\":\"run.completed\",\"eventId\":\"c\",\"occurredAt\":\"" + now + "\"}]",
                HttpStatusCode.OK, token);
        }
        // The standings are an async projection: stopped only once the board shows every participant.
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!(await http.GetStringAsync("/api/boards/progress-board/leaderboard")).Contains("\"participants\":3"))
        {
            Assert.True(DateTime.UtcNow < deadline, "the board never showed its three participants");
            await Task.Delay(200);
        }
        var stopped = service.Terminate(TimeSpan.FromSeconds(30));
        Assert.True(stopped.ExitCode == 0, stopped.All);
    }
}
