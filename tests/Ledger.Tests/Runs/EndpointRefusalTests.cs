using System.Net;
using System.Reflection;
using Ledger.Contract;
using Ledger.Infrastructure;
using Ledger.Runs;
using Ledger.Tests.Fixtures;
using Ledger.Tests.Retention;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Runs;

/// <summary>
/// The run endpoints whose refusals no decider decides (reads, registration, restore): their
/// [Refuses] lists cannot be explored the way <see cref="DeciderRefusalTests"/> explores the decider,
/// since the refusals are written in the endpoint and the readers it calls, not in one pure function.
/// So each code an endpoint lists is asked of it here, and what it answered is held to its list both
/// ways: a code the list gains with no request that gets it, or loses while the endpoint still
/// answers it, fails here (every other answer of the suite is held to the list by ContractValidator).
/// What stays unchecked: a refusal on a path that no test drives and the list does not name.
/// </summary>
public sealed class EndpointRefusalTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    [Fact]
    public async Task each_run_endpoint_without_a_decider_answers_every_refusal_it_declares_and_no_other()
    {
        var answered = new Dictionary<string, SortedSet<string>>(StringComparer.Ordinal);
        void Answered(string operation, Response response)
        {
            Assert.True(response.ProblemCode is not null, $"{operation} answered {response.Code} without a problem: {response.Text}");
            if (!answered.TryGetValue(operation, out var codes)) answered[operation] = codes = new(StringComparer.Ordinal);
            codes.Add(response.ProblemCode!);
        }

        var admin = LedgerHost.AdminKey;
        var unknown = NewRunId();
        Answered("GetRun", await _api.GetRun(unknown));
        Answered("GetRunState", await _api.Send(HttpMethod.Get, $"/api/runs/{unknown}/state", admin));
        Answered("GetRunHistory", await _api.Send(HttpMethod.Get, $"/api/runs/{unknown}/events", admin));
        Answered("RestoreRun", await _api.Send(HttpMethod.Post, $"/api/runs/{unknown}/restore", admin));

        var registered = await _api.Register(new { runId = NewRunId(), participant = "one" });
        Answered("RegisterRun", await _api.Send(HttpMethod.Post, "/api/runs", admin, new { runId = registered, participant = "another" }));
        Answered("GetRunState", await _api.Send(HttpMethod.Get, $"/api/runs/{registered}/state?version=99", admin));

        // The archive's refusals, through a node that archives into a folder of its own (the same database and clock).
        var folder = Directory.CreateTempSubdirectory("ledger-refuses-").FullName;
        try
        {
            await using var keeping = await ledger.SecondInstance(RetentionHost.Settings(folder));
            var api = new Scenarios(ledger, keeping);
            var (run, token) = await api.Started();
            Assert.Equal(HttpStatusCode.OK, (await api.Events(run, token, Event("run.completed"))).Status);
            Answered("RestoreRun", await api.Send(HttpMethod.Post, $"/api/runs/{run}/restore", admin));
            await ledger.Settled();
            ledger.Clock.Advance(RetentionHost.Window + TimeSpan.FromMinutes(1));
            await RetentionKit.RetentionSweep(ledger, keeping);
            foreach (var file in Directory.EnumerateFiles(folder, "*.rla", SearchOption.AllDirectories)) File.Delete(file);
            Answered("GetRunHistory", await api.Send(HttpMethod.Get, $"/api/runs/{run}/events", admin));
            Answered("GetRunState", await api.Send(HttpMethod.Get, $"/api/runs/{run}/state?version=1", admin));
            Answered("RestoreRun", await api.Send(HttpMethod.Post, $"/api/runs/{run}/restore", admin));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }

        var wrong = new List<string>();
        foreach (var (operation, declared) in WithoutDecider())
        {
            var got = answered.GetValueOrDefault(operation) ?? [];
            foreach (var code in declared.Except(got).Order()) wrong.Add($"{operation}: [Refuses] lists '{code}', which no request here got from it");
            foreach (var code in got.Except(declared).Order()) wrong.Add($"{operation}: answered '{code}', which [Refuses] does not list");
        }
        Assert.True(wrong.Count == 0, string.Join("\n", wrong));
        Assert.Equal(WithoutDecider().Keys.Order(), answered.Keys.Order());
    }

    [Fact]
    public void every_run_endpoint_with_refusals_is_checked_by_its_decider_or_here()
    {
        // A new run endpoint with a [Refuses] list has to join one of the two checks.
        var withDecider = DeciderRefusalTests.EndpointOf.Values.ToHashSet(StringComparer.Ordinal);
        Assert.Equal(["GetRun", "GetRunHistory", "GetRunState", "RegisterRun", "RestoreRun"], WithoutDecider().Keys.Order());
        Assert.Empty(withDecider.Except(RunEndpoints().Keys));
    }

    /// <summary>The run endpoints (routes under /api/runs) that list refusals, with the codes they list.</summary>
    private static Dictionary<string, HashSet<string>> RunEndpoints() =>
        typeof(RunDecider).Assembly.GetTypes()
            .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.Static | BindingFlags.Instance | BindingFlags.DeclaredOnly))
            .Select(m => (Route: m.GetCustomAttributes().FirstOrDefault(a => a.GetType().Namespace == "Wolverine.Http"
                                                                             && a.GetType().GetProperty("Template") is not null),
                          Refuses: m.GetCustomAttribute<RefusesAttribute>()))
            .Where(e => e.Route is not null && e.Refuses is not null
                        && ((string)e.Route.GetType().GetProperty("Template")!.GetValue(e.Route)!).StartsWith("/api/runs", StringComparison.Ordinal))
            .ToDictionary(e => (string)e.Route!.GetType().GetProperty("Name")!.GetValue(e.Route)!,
                e => e.Refuses!.Codes.ToHashSet(StringComparer.Ordinal), StringComparer.Ordinal);

    private static Dictionary<string, HashSet<string>> WithoutDecider()
    {
        var withDecider = DeciderRefusalTests.EndpointOf.Values.ToHashSet(StringComparer.Ordinal);
        return RunEndpoints().Where(e => !withDecider.Contains(e.Key)).ToDictionary(e => e.Key, e => e.Value, StringComparer.Ordinal);
    }
}
