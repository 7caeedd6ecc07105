using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using System.Text.Json;

namespace Ledger.Bench;

/// <summary>What one repetition of the board-under-load figure saw.</summary>
public sealed record BoardLoadSample(Sample Reads, Sample Finishes, IReadOnlyList<double> VisibleAfterMs, int Probes, int ProbesNeverSeen);

/// <summary>
/// Leaderboard reads while runs keep finishing on the same board: readers ask for random pages, a
/// finisher completes prepared runs (registered and claimed beforehand) at a fixed rate, and every
/// second one of them is a probe whose score beats every other, so it must become rank 1; the probe
/// polls page 1 from the moment its completion was acknowledged until its run is there. That delay
/// is "visible after" (the standings projection's lag plus one read), with no cache in between.
/// </summary>
public static class BoardUnderLoad
{
    /// <summary>Registers and claims <paramref name="count"/> runs on the board (8 at a time); their lease tokens.</summary>
    public static async Task<ConcurrentQueue<(string RunId, string Token)>> PrepareAsync(LedgerClient client, string board, string tag, int count,
        int participants)
    {
        var prepared = new ConcurrentQueue<(string, string)>();
        var next = -1;
        await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Task.Run(async () =>
        {
            for (var i = Interlocked.Increment(ref next); i < count; i = Interlocked.Increment(ref next))
            {
                var runId = $"live-{tag}-{i:D6}";
                var body = JsonSerializer.SerializeToUtf8Bytes(new { runId, board, participant = $"live-team-{i % participants:D4}" });
                await client.RegisterAsync(runId, body);
                prepared.Enqueue((runId, await client.ClaimAsync(runId)));
            }
        })));
        return prepared;
    }

    public static async Task<BoardLoadSample> RunAsync(LedgerClient client, string board, int pages, int pageSize, int readers,
        TimeSpan duration, int finishesPerSecond, ConcurrentQueue<(string RunId, string Token)> prepared, double probeScoreBase)
    {
        var finishes = new Recorder();
        var visible = new ConcurrentBag<double>();
        int probes = 0, unseen = 0;
        var started = Stopwatch.GetTimestamp();
        var deadline = DateTime.UtcNow + duration;

        // Open loop: one completion every 1/rate seconds, however long the previous ones take.
        var finisher = Task.Run(async () =>
        {
            var interval = TimeSpan.FromSeconds(1.0 / finishesPerSecond);
            var inFlight = new List<Task>();
            var n = 0;
            var next = Stopwatch.GetTimestamp();
            while (DateTime.UtcNow < deadline && prepared.TryDequeue(out var run))
            {
                var probe = n++ % finishesPerSecond == finishesPerSecond / 2;
                var score = probe ? probeScoreBase + Interlocked.Increment(ref probes) : Random.Shared.Next(0, 10_000) / 10_000.0;
                inFlight.Add(Finish(client, run, score, probe, finishes, visible, () => Interlocked.Increment(ref unseen), board));
                next += (long)(interval.TotalSeconds * Stopwatch.Frequency);
                var wait = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), next);
                if (wait > TimeSpan.Zero) await Task.Delay(wait);
                inFlight.RemoveAll(t => t.IsCompleted);
            }
            await Task.WhenAll(inFlight);
        });

        var reads = await Reads.LeaderboardAsync(client, board, pages, pageSize, readers, duration);
        await finisher;
        return new BoardLoadSample(reads, finishes.Finish(Stopwatch.GetElapsedTime(started)), visible.Order().ToList(), probes, unseen);
    }

    private static async Task Finish(LedgerClient client, (string RunId, string Token) run, double score, bool probe, Recorder finishes,
        ConcurrentBag<double> visible, Action neverSeen, string board)
    {
        var now = DateTimeOffset.UtcNow.ToString("O");
        var body = Encoding.UTF8.GetBytes(
            $"[{{\"type\":\"scores.reported\",\"eventId\":\"{run.RunId}-s\",\"occurredAt\":\"{now}\",\"scores\":{{\"{Seeder.PrimaryScore}\":{score.ToString("R", System.Globalization.CultureInfo.InvariantCulture)},\"{Seeder.TieBreakScore}\":0.5}}}}," +
            $"{{\"type\":\"run.completed\",\"eventId\":\"{run.RunId}-c\",\"occurredAt\":\"{now}\"}}]");
        var t = Stopwatch.GetTimestamp();
        var error = await client.PostEventsAsync(run.RunId, run.Token, body);
        if (error is not null)
        {
            finishes.Error($"finish {run.RunId}: {error}");
            return;
        }
        finishes.Add(t, 2);
        if (!probe) return;

        // Acknowledged: the verdict is committed. Poll the top of the board until it shows the probe.
        var acknowledged = Stopwatch.GetTimestamp();
        while (Stopwatch.GetElapsedTime(acknowledged) < TimeSpan.FromSeconds(10))
        {
            var (status, text) = await client.GetLeaderboardAsync(board, 1, 1);
            if (status == System.Net.HttpStatusCode.OK && text.Contains($"\"runId\":\"{run.RunId}\"", StringComparison.Ordinal))
            {
                visible.Add(Stopwatch.GetElapsedTime(acknowledged).TotalMilliseconds);
                return;
            }
            await Task.Delay(10);
        }
        neverSeen();
    }
}
