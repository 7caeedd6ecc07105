using Ledger.Runs;

namespace Ledger.Retention;

/// <summary>Archived events as the export reads them: one run's in version order, or every run's stored since a time, in sequence order.</summary>
public static class ArchivedEvents
{
    /// <summary>One archived run's events, through the version it was archived through.</summary>
    public static IEnumerable<StoredEvent> Of(RunArchives archives, ArchivedRunRow archive)
    {
        foreach (var chunk in archives.ChunksFrom(archive, 1, archive.ArchivedVersion))
        {
            foreach (var line in chunk.Events) yield return archives.ToStored(archive.RunId, line);
        }
    }

    /// <summary>
    /// Every archived event stored at or after <paramref name="since"/>, across runs, in sequence
    /// order: a merge of each run's archive, opened only when the merge reaches its first sequence,
    /// so that only runs whose events interleave are open at once.
    /// </summary>
    public static IEnumerable<(string RunId, StoredEvent Event)> Since(RunArchives archives, IEnumerable<ArchivedRunRow> runs, DateTimeOffset since)
    {
        var queue = new PriorityQueue<(ArchivedRunRow Run, IEnumerator<StoredEvent>? Events), long>();
        foreach (var run in runs.Where(r => r.Bundles.Count > 0)) queue.Enqueue((run, null), run.Bundles[0].FirstSequence);
        try
        {
            while (queue.TryDequeue(out var entry, out _))
            {
                var (run, events) = entry;
                if (events is null)
                {
                    // Opened when the merge reaches the run's first sequence: placed again by its first event stored since the time.
                    events = Of(archives, run).Where(e => e.Timestamp >= since).GetEnumerator();
                    if (events.MoveNext()) queue.Enqueue((run, events), events.Current.Sequence);
                    else events.Dispose();
                    continue;
                }
                yield return (run.RunId, events.Current);
                if (events.MoveNext()) queue.Enqueue((run, events), events.Current.Sequence);
                else events.Dispose();
            }
        }
        finally
        {
            while (queue.TryDequeue(out var left, out _)) left.Events?.Dispose();
        }
    }
}
