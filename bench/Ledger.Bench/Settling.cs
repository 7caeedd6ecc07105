using System.Diagnostics;
using System.Globalization;
using Ledger.Infrastructure;
using Npgsql;

namespace Ledger.Bench;

/// <summary>
/// Before the throughput figures: single-event and batch load until the runtime has stopped
/// compiling (tiered compilation recompiles the hot methods in the background for a minute or
/// so after the first requests), read from the service's own runtime meter on /metrics. The
/// figures are then the service's steady state; what the start costs is the startup figure's.
/// </summary>
public static class WarmUp
{
    public static async Task<string> UntilCompiledAsync(LedgerClient client, BenchOptions o, Action<string> log, CancellationToken ct)
    {
        var slice = TimeSpan.FromSeconds(o.Quick ? 1 : 3);
        var limit = TimeSpan.FromSeconds(o.Quick ? 20 : 90);
        var clock = Stopwatch.StartNew();
        var (jitSeconds, methods) = await JitAsync(client);
        var (startSeconds, startMethods) = (jitSeconds, methods);
        var round = 0;
        var quiet = 0;
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            var pair = Stopwatch.StartNew();
            await HttpIngestion.RunAsync(client, o, IngestionMode.Single, $"settle-s{round}", o.Workers, slice);
            await HttpIngestion.RunAsync(client, o, IngestionMode.Batch, $"settle-m{round}", o.Workers, slice);
            round++;
            var (nowSeconds, nowMethods) = await JitAsync(client);
            var share = (nowSeconds - jitSeconds) / pair.Elapsed.TotalSeconds;
            var compiled = nowMethods - methods;
            (jitSeconds, methods) = (nowSeconds, nowMethods);
            // Settled: the compiler used under 2 % of one core over the last two pairs of slices.
            quiet = share < 0.02 ? quiet + 1 : 0;
            var settled = quiet >= 2;
            if (settled || clock.Elapsed >= limit)
            {
                var note = $"Before the figures, the service ran {clock.Elapsed.TotalSeconds:0} s of single-event and batch load (8 workers) " +
                           $"until the JIT had {(settled ? "settled" : "still not settled, the limit")}: {compiled:N0} methods compiled in the last " +
                           $"{pair.Elapsed.TotalSeconds:0} s ({share:P1} of one core), {nowMethods - startMethods:N0} methods and {nowSeconds - startSeconds:0.0} s of JIT in all during this load. " +
                           (settled
                               ? "The figures are its steady state; the start-up's cost is the startup figure's."
                               : "The first figures still include compilation.");
                log(note);
                return note;
            }
        }
    }

    private static async Task<(double Seconds, long Methods)> JitAsync(LedgerClient client)
    {
        var (status, text) = await client.GetTextAsync("/metrics", LedgerProcess.ReadKey);
        if (status != 200) throw new InvalidOperationException($"GET /metrics answered {status}");
        return (Counter(text, "dotnet_jit_compilation_time_seconds_total"), (long)Counter(text, "dotnet_jit_compiled_methods_total"));
    }

    private static double Counter(string text, string name)
    {
        foreach (var line in text.Split('\n'))
        {
            if (!line.StartsWith(name, StringComparison.Ordinal) || line.Length == name.Length || line[name.Length] is not ('{' or ' ')) continue;
            return double.Parse(line[(line.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture);
        }
        throw new InvalidOperationException($"/metrics has no {name}");
    }
}

/// <summary>
/// Waits until every shard of the service's async daemon (the standings projection, the webhook
/// relay) has processed every event committed so far: a figure's CPU and WAL window closes only
/// then, so that what its events cost includes that work.
/// </summary>
public static class DaemonCatchUp
{
    public readonly record struct Wait(TimeSpan Waited, bool TimedOut);

    public static async Task<Wait> WaitAsync(NpgsqlDataSource db, StorageNames names, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        try
        {
            await using var query = db.CreateCommand($"select coalesce(max(seq_id), 0) from {names.Events}");
            var head = (long)(await query.ExecuteScalarAsync())!;
            while (true)
            {
                await using var progress = db.CreateCommand(
                    $"select count(*), coalesce(min(last_seq_id), 0) from {names.Progression} where name not like 'HighWater%'");
                await using var reader = await progress.ExecuteReaderAsync();
                await reader.ReadAsync();
                var (shards, slowest) = (reader.GetInt64(0), reader.GetInt64(1));
                if (shards == 0 || slowest >= head) return new Wait(clock.Elapsed, false);
                if (clock.Elapsed > timeout) return new Wait(clock.Elapsed, true);
                await Task.Delay(20);
            }
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.UndefinedTable)
        {
            // The service has not created its schema (yet): nothing of it to wait for.
            return new Wait(clock.Elapsed, false);
        }
    }
}
