using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Marten;
using Microsoft.Extensions.Logging.Abstractions;

namespace Ledger.Bench;

/// <summary>
/// KPI reads (issue 13): <c>GET /api/kpis</c> over HTTP, from the kept counters, at the runs the
/// earlier figures left and again once the reads' runs are seeded. The seeding appends straight
/// through Marten, past the service's writers and their counters, so the counters are then
/// re-established from the stored data (<see cref="KpiStore.RebuildAsync"/>, what `kpis rebuild`
/// and the first start on an older database do) before the read is measured.
/// </summary>
public static class KpiFigures
{
    public const string Few = "reads.kpis.few";
    public const string Many = "reads.kpis";

    public static string Title(long runs) => $"GET /api/kpis ({runs:N0} runs)";

    /// <summary>Recounts the counters from the stored rows (the service keeps serving meanwhile).</summary>
    public static async Task<KpiRebuild> EstablishAsync(DocumentStore mirror, string connectionString)
    {
        await using var database = new ReadDatabase(new LedgerDatabase(connectionString));
        var store = new KpiStore(database, new StorageNames(mirror), NullLogger<KpiStore>.Instance);
        return await store.RebuildAsync(once: false, CancellationToken.None);
    }

    /// <summary>The run count GET /api/kpis answers: after establishing, it must be every stored run.</summary>
    public static async Task<long> RunsAsync(Uri baseAddress)
    {
        using var http = Client(baseAddress, 1);
        var body = await http.GetStringAsync("/api/kpis");
        using var json = JsonDocument.Parse(body);
        return json.RootElement.GetProperty("runs").GetInt64();
    }

    /// <summary><paramref name="readers"/> closed-loop readers of GET /api/kpis for <paramref name="duration"/>.</summary>
    public static async Task<Sample> ReadAsync(Uri baseAddress, int readers, TimeSpan duration)
    {
        using var http = Client(baseAddress, readers);
        return await Load.Run(readers, duration, async (reader, recorder, deadline) =>
        {
            while (DateTime.UtcNow < deadline)
            {
                var t = Stopwatch.GetTimestamp();
                using var response = await http.GetAsync("/api/kpis", HttpCompletionOption.ResponseContentRead);
                if (response.StatusCode == HttpStatusCode.OK) recorder.Add(t, 1);
                else recorder.Error($"GET /api/kpis answered {(int)response.StatusCode}");
            }
        });
    }

    private static HttpClient Client(Uri baseAddress, int connections)
    {
        var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = connections, UseProxy = false, UseCookies = false })
        {
            BaseAddress = baseAddress,
            Timeout = TimeSpan.FromSeconds(30),
        };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", LedgerProcess.ReadKey);
        return http;
    }
}
