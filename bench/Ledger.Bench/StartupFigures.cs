using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Ledger.Bench;

/// <summary>One start of the service, from the process start to the end of a short load.</summary>
public sealed record StartSample(double LiveSeconds, double CpuToLiveSeconds, double RssAtLiveMb, double FirstLifecycleMs,
    double CpuFirstLifecycleSeconds, double RssAfterLoadMb, double PeakRssMb, double LoadEventsPerSecond);

/// <summary>
/// The service started again and again, as a supervisor restarts it: the time from the process
/// start to the first 200 of GET /health/live, its RSS then, the time of a first lifecycle per
/// worker (register, claim, events: the first call of each endpoint, where runtime code generation
/// used to compile), and its RSS after a short single-event load; with the CPU time the service
/// itself spent, which other work on a shared machine disturbs less than the wall time. Each start
/// is its own process on the same database, whose schema an unmeasured first start has created.
/// </summary>
public static class StartupFigures
{
    /// <summary>Starts measured: never fewer than 5, so that the medians mean something.</summary>
    public static int Starts(BenchOptions o) => Math.Max(5, o.Repetitions);

    public static async Task<List<StartSample>> MeasureAsync(BenchOptions o, string dll, string connectionString, string database,
        Action<string> log, CancellationToken ct)
    {
        var logs = Path.Combine("/var/tmp/run-ledger/bench-logs", $"{database}-startup");
        var timeout = TimeSpan.FromSeconds(180);
        await using (await LedgerProcess.StartAsync(dll, o.LedgerPort, connectionString, Path.Combine(logs, "schema.log"), timeout, o.LedgerEnvironment))
        {
            log("startup: the schema is in place (unmeasured first start)");
        }

        var samples = new List<StartSample>();
        for (var rep = 1; rep <= Starts(o); rep++)
        {
            ct.ThrowIfCancellationRequested();
            var clock = Stopwatch.StartNew();
            await using var ledger = await LedgerProcess.StartAsync(dll, o.LedgerPort, connectionString, Path.Combine(logs, $"start-{rep}.log"), timeout,
                o.LedgerEnvironment, readyPath: "/health/live", pollMilliseconds: 10);
            var live = clock.Elapsed.TotalSeconds;
            var rssAtLive = ledger.RssKb() / 1024.0;
            var cpu = new CpuProbe(o.PostgresDirectory) { LedgerPid = ledger.Pid };
            var cpuAtLive = cpu.Read().Ledger;

            using var client = new LedgerClient(ledger.BaseAddress, o.Workers + 2);
            var first = Stopwatch.StartNew();
            await HttpIngestion.WarmUpAsync(client, o, IngestionMode.Single, $"start{rep}-first");
            var firstMs = first.Elapsed.TotalMilliseconds;
            var cpuFirst = cpu.Read().Ledger - cpuAtLive;
            var load = await HttpIngestion.RunAsync(client, o, IngestionMode.Single, $"start{rep}-load", o.Workers, o.HttpDuration);
            if (load.Errors > 0) throw new InvalidOperationException($"startup load: {load.Errors} errors, first {load.FirstError}");

            var sample = new StartSample(live, cpuAtLive / CpuProbe.TicksPerSecond, rssAtLive, firstMs, cpuFirst / CpuProbe.TicksPerSecond,
                ledger.RssKb() / 1024.0, ledger.PeakRssKb / 1024.0, load.EventsPerSecond);
            samples.Add(sample);
            log($"start {rep}/{Starts(o)}: /health/live after {live:0.00} s ({sample.CpuToLiveSeconds:0.00} s CPU) at {rssAtLive:0} MB; " +
                $"first lifecycle {firstMs:0} ms ({sample.CpuFirstLifecycleSeconds:0.00} s CPU); " +
                $"after {o.HttpDuration.TotalSeconds:0} s of load {sample.RssAfterLoadMb:0} MB (peak {sample.PeakRssMb:0} MB, {load.EventsPerSecond:0} events/s)");
        }
        return samples;
    }

    /// <summary>The medians, and every start, for the report.</summary>
    public static void AppendTo(StringBuilder sb, IReadOnlyList<StartSample> starts, BenchOptions o)
    {
        if (starts.Count == 0) return;
        string Med(Func<StartSample, double> f) => Results.Num(Measurement.Median(starts.Select(f).ToList()));
        sb.AppendLine($"Start-up ({starts.Count} starts of the service on an existing schema; medians, every start in brackets; " +
                      $"load = {o.HttpDuration.TotalSeconds.ToString("0.#", CultureInfo.InvariantCulture)} s of single-event requests by {o.Workers} workers):");
        sb.AppendLine();
        sb.AppendLine("| figure | median | every start |");
        sb.AppendLine("|---|---:|---|");
        void Row(string name, Func<StartSample, double> f) =>
            sb.AppendLine($"| {name} | {Med(f)} | {string.Join(", ", starts.Select(s => Results.Num(f(s))))} |");
        Row("process start to first 200 of GET /health/live (s)", s => s.LiveSeconds);
        Row("CPU time of the service until then (s)", s => s.CpuToLiveSeconds);
        Row("RSS then (MB)", s => s.RssAtLiveMb);
        Row($"first lifecycle of {o.Workers} workers after the start (ms)", s => s.FirstLifecycleMs);
        Row("CPU time of the service in that first lifecycle (s)", s => s.CpuFirstLifecycleSeconds);
        Row("RSS after the load (MB)", s => s.RssAfterLoadMb);
        Row("RSS peak, start and load (MB)", s => s.PeakRssMb);
        Row("load throughput (events/s)", s => s.LoadEventsPerSecond);
        sb.AppendLine();
    }
}
