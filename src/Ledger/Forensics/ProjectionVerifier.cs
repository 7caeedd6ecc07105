using JasperFx.Events;
using Ledger.Contract;
using Ledger.Infrastructure;
using Ledger.Leaderboards;
using Ledger.Retention;
using Ledger.Runs;
using Marten;
using Marten.Events.Archiving;
using Microsoft.Extensions.Options;
using Npgsql;
using Weasel.Core;

namespace Ledger.Forensics;

public sealed record VerifyReport(long Events, int Streams, IReadOnlyDictionary<string, int> Documents, IReadOnlyList<string> Differences)
{
    public bool Passed => Differences.Count == 0;
}

/// <summary>
/// Replay with proof (invariant 9): rebuilds every projection from the events alone, writes the
/// result into a scratch schema with the same storage settings, and compares it document by
/// document (as jsonb) with the live schema. Also checks every published verdict against the
/// verdicts the fold derives, and every kept KPI counter against its recount. An archived run's
/// events are read from its archive, which is checked on the way (manifest, chunks, hash chain,
/// content digest, and that folding it gives the snapshot its marker keeps); its marker stands for
/// the verdict whose place it took.
/// </summary>
public sealed class ProjectionVerifier(IDocumentStore store, LedgerDatabase database, IOptions<LedgerOptions> options,
    StorageNames names, KpiStore kpis, RunArchives archives, ILogger<ProjectionVerifier> logger)
{
    private const int Page = 5_000;

    public async Task<VerifyReport> VerifyAsync(CancellationToken ct, ProgressReport? progress = null)
    {
        var runs = new Dictionary<string, Run>(StringComparer.Ordinal);
        var published = new Dictionary<string, List<RunStatus>>(StringComparer.Ordinal);
        var leases = new List<LeaseHolder>();
        var standings = new Dictionary<string, Standing>(StringComparer.Ordinal);
        var changes = new List<StandingChange>();
        var differences = new List<string>();
        long events = 0, last = 0;
        await store.Storage.ApplyAllConfiguredChangesToDatabaseAsync();

        long archivedEvents = 0;
        await using (var session = store.QuerySession())
        {
            var archived = await ArchivedRunStore.AllArchivedAsync(session, names.Schema, ct);
            var markers = new HashSet<string>(StringComparer.Ordinal);
            var keptVerdicts = new Dictionary<string, List<long>>(StringComparer.Ordinal);
            // The stage counts what the event store holds; an archived run's events are read from its marker's archive on the way.
            var folding = progress?.Stage("fold every event",
                await session.Events.QueryAllRawEvents().Where(e => e.MaybeArchived()).CountAsync(ct));
            while (true)
            {
                var from = last;
                // Archived streams still stand behind their projections (leaderboards, KPIs): include them.
                var page = await session.Events.QueryAllRawEvents()
                    .Where(e => e.MaybeArchived() && e.Sequence > from).OrderBy(e => e.Sequence).Take(Page).ToListAsync(ct);
                if (page.Count == 0) break;
                foreach (var e in page)
                {
                    var key = e.StreamKey!;
                    if (e.Data is RunArchived marker)
                    {
                        markers.Add(key);
                        var row = archived.GetValueOrDefault(key);
                        var verdicts = keptVerdicts.GetValueOrDefault(key) ?? [];
                        if (marker.Verdict is not null) verdicts.Add(e.Sequence);
                        var (run, count) = CheckArchive(key, row, marker, e.Sequence, verdicts, leases, differences);
                        runs[key] = run;
                        archivedEvents += count;
                        if (marker.Verdict is { } verdict)
                        {
                            // The marker stands where its verdict stood: published and folded into the standings at that sequence.
                            (published.TryGetValue(key, out var list) ? list : published[key] = []).Add(verdict.Status);
                            if (Standing.Fold(standings, verdict, e.Sequence) is { } change) changes.Add(change);
                        }
                        continue;
                    }
                    if (e.Data is VerdictReached && !runs.ContainsKey(key))
                    {
                        // A verdict kept in the event store ahead of its run's archive (a run reclassified before it was archived).
                        (keptVerdicts.TryGetValue(key, out var kept) ? kept : keptVerdicts[key] = []).Add(e.Sequence);
                    }
                    Fold(e, runs, published, leases, standings, changes);
                }
                events += page.Count;
                last = page[^1].Sequence;
                folding?.Report(events);
            }
            folding?.Complete();
            foreach (var row in archived.Values.Where(r => !markers.Contains(r.RunId)).OrderBy(r => r.RunId, StringComparer.Ordinal).Take(200))
            {
                differences.Add($"archive/{row.RunId}: archived through version {row.ArchivedVersion}, but its marker (sequence {row.MarkerSequence}) is not in the event store");
            }
        }
        events += archivedEvents;

        foreach (var (runId, run) in runs)
        {
            var derived = run.Verdicts.Select(v => v.Status).ToList();
            var verdicts = published.GetValueOrDefault(runId) ?? [];
            if (!derived.SequenceEqual(verdicts))
            {
                differences.Add($"run/{runId}: published verdicts [{string.Join(", ", verdicts)}] but the fold derives [{string.Join(", ", derived)}]");
            }
        }

        var anomalies = runs.Values.SelectMany(r => Enumerable.Range(0, r.Anomalies.Count).Select(i => AnomalyRecord.From(r, i))).ToList();
        using var scratchStore = ScratchStore($"{options.Value.SchemaName}_verify");
        var writing = progress?.Stage("write the rebuild", runs.Count + leases.Count + standings.Count + anomalies.Count, "documents");
        await WriteScratch(scratchStore, runs.Values, leases, standings.Values, anomalies, ct);
        writing?.Report(runs.Count + leases.Count + standings.Count + anomalies.Count);
        writing?.Complete();
        var comparing = progress?.Stage("compare with the live projections", 6, "tables");

        // Live and scratch tables by the same mapping, each from its own store.
        var scratch = new StorageNames(scratchStore);
        differences.AddRange(await Compare(names.Table<Run>(), scratch.Table<Run>(), "run", "", ct));
        differences.AddRange(await Compare(names.Table<LeaseHolder>(), scratch.Table<LeaseHolder>(), "lease", "", ct));
        differences.AddRange(await Compare(names.Table<Standing>(), scratch.Table<Standing>(), "standing", "", ct));
        differences.AddRange(await CompareBoards(standings.Values, changes, ct));
        // Anomalies of refused requests come from the rejection log, not from events: only run-derived ones are rebuilt.
        // The count of late events beyond a run's cap is kept as they come, not derived from the events: left out.
        differences.AddRange(await Compare(names.Table<AnomalyRecord>(), scratch.Table<AnomalyRecord>(), "anomaly", "where id like '%#%'", ct,
            ignoredKey: names.JsonKey<AnomalyRecord>(a => a.Count)));
        // The kept KPI counters against a recount of the rebuilt runs and the stored refusals.
        differences.AddRange(await kpis.CompareAsync(runs.Values, ct));
        comparing?.Report(6);
        comparing?.Complete();

        var documents = new Dictionary<string, int>
        {
            ["run"] = runs.Count, ["lease"] = leases.Count, ["standing"] = standings.Count, ["standing-change"] = changes.Count,
            ["anomaly"] = anomalies.Count,
        };
        logger.LogInformation("Verify: {Events} events, {Streams} streams, {Differences} differences", events, runs.Count, differences.Count);
        return new VerifyReport(events, runs.Count, documents, differences);
    }

    /// <summary>
    /// Reads an archived run's bundles whole, checking each (manifest against the marker, chunks,
    /// chain, content digest), and folds them: the run as its archive gives it, with its leases.
    /// Every difference names the run and, when it can, the first bad event. When the archive cannot
    /// be read, the marker's snapshot stands in for it, so that one damaged file is one difference.
    /// </summary>
    private (Run Run, long Events) CheckArchive(string runId, ArchivedRunRow? row, RunArchived marker, long markerSequence, List<long> keptVerdicts,
        List<LeaseHolder> leases, List<string> differences)
    {
        if (row is null)
        {
            differences.Add($"archive/{runId}: the event store holds its run.archived marker, but {ArchivedRunStore.TableName} does not list it as archived");
            return (marker.Snapshot, 0);
        }
        if (row.MarkerSequence != markerSequence || row.ArchivedVersion != marker.LastVersion
            || ArchivedRunStore.SerializeBundles(row.Bundles) != ArchivedRunStore.SerializeBundles(marker.Bundles))
        {
            differences.Add($"archive/{runId}: its marker (sequence {markerSequence}, through version {marker.LastVersion}) and {ArchivedRunStore.TableName} " +
                            $"(sequence {row.MarkerSequence}, through version {row.ArchivedVersion}) disagree");
        }

        var fold = new RunReplay.Fold();
        var claims = new List<LeaseHolder>();
        var verdicts = new List<long>();
        try
        {
            archives.CheckAll(runId, marker.Bundles, (_, e) =>
            {
                fold.Apply(e, explain: false);
                if (e.Data is RunClaimed claimed) claims.Add(new LeaseHolder { Id = claimed.LeaseTokenHash, RunId = runId, IssuedAt = claimed.ClaimedAt });
                if (e.Data is VerdictReached) verdicts.Add(e.Sequence);
            });
        }
        catch (ArchiveUnreadableException e)
        {
            differences.Add($"archive/{runId}: {e.Bundle} {e.Detail}" +
                            (e.Version is { } v ? $"; first bad event: version {v}{(e.Sequence is { } q ? $", sequence {q}" : "")}" : ""));
            return (marker.Snapshot, 0);
        }
        leases.AddRange(claims);
        if (fold.Run is null || fold.Version != marker.LastVersion || marker.Count != fold.Version)
        {
            differences.Add($"archive/{runId}: its bundles hold versions 1..{fold.Version}, its marker says {marker.Count} events through version {marker.LastVersion}");
            return (marker.Snapshot, fold.Version);
        }
        var serializer = store.Options.Serializer();
        var folded = serializer.ToJson(fold.Run);
        var snapshot = serializer.ToJson(marker.Snapshot);
        if (!JsonDiff.Same(snapshot, folded))
        {
            differences.Add($"archive/{runId}: folding the archive does not give the state its marker keeps: {JsonDiff.Describe(snapshot, folded)}");
        }
        if (!verdicts.SequenceEqual(keptVerdicts))
        {
            differences.Add($"archive/{runId}: the archive's verdicts are at sequences [{string.Join(", ", verdicts)}], " +
                            $"the event store keeps them at [{string.Join(", ", keptVerdicts)}]");
        }
        return (fold.Run, fold.Version);
    }

    private static void Fold(IEvent e, Dictionary<string, Run> runs, Dictionary<string, List<RunStatus>> published,
        List<LeaseHolder> leases, Dictionary<string, Standing> standings, List<StandingChange> changes)
    {
        var key = e.StreamKey!;
        switch (e.Data)
        {
            case RunRegistered registered:
                runs[key] = Run.Create(registered);
                break;
            case VerdictReached verdict:
                (published.TryGetValue(key, out var list) ? list : published[key] = []).Add(verdict.Status);
                if (Standing.Fold(standings, verdict, e.Sequence) is { } change) changes.Add(change);
                break;
            case RunClaimed claimed:
                leases.Add(new LeaseHolder { Id = claimed.LeaseTokenHash, RunId = key, IssuedAt = claimed.ClaimedAt });
                break;
        }

        if (runs.TryGetValue(key, out var run))
        {
            if (e.Data is not RunRegistered) run.Fold(e.Data);
            run.Version = e.Version;
        }
    }

    /// <summary>
    /// The boards' tables against the fold: each participant's best now (with its rank key) and
    /// every change of best, row for row.
    /// </summary>
    private async Task<List<string>> CompareBoards(IEnumerable<Standing> standings, List<StandingChange> changes, CancellationToken ct)
    {
        static string Render(params object?[] values) => string.Join(" | ", values.Select(v => v switch
        {
            null => "-",
            byte[] key => Convert.ToHexString(key),
            double d => d.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            // PostgreSQL keeps microseconds.
            DateTimeOffset t => ToMicroseconds(t).ToString("O"),
            _ => v.ToString(),
        }));

        var expectedCurrent = standings.ToDictionary(s => $"{s.Board}/{s.Participant}",
            s => Render(s.BestRunId, s.BestScore, s.BestTieBreak, s.BestCompletedAt, s.BestRankKey, s.LastSequence), StringComparer.Ordinal);
        // A change is in force until the earliest time of a later change of its participant.
        var supersededAt = new Dictionary<StandingChange, string>();
        var earliestLater = new Dictionary<string, DateTimeOffset>(StringComparer.Ordinal);
        foreach (var c in changes.OrderByDescending(c => c.Sequence))
        {
            var participant = $"{c.Board}/{c.Participant}";
            var known = earliestLater.TryGetValue(participant, out var later);
            supersededAt[c] = known ? Microseconds(later) : "in force";
            earliestLater[participant] = known && later < c.At ? later : c.At;
        }
        var expectedChanges = changes.ToDictionary(c => $"{c.Board}/{c.Participant}@{c.Sequence}",
            c => Render(c.At, c.RunId, c.Score, c.TieBreak, c.CompletedAt, c.RankKey, supersededAt[c]), StringComparer.Ordinal);

        var liveCurrent = new Dictionary<string, string>(StringComparer.Ordinal);
        var liveChanges = new Dictionary<string, string>(StringComparer.Ordinal);
        await using (var connection = new NpgsqlConnection(database.ConnectionString))
        {
            await connection.OpenAsync(ct);
            await using (var command = new NpgsqlCommand(
                             $"select board, participant, run_id, score, tie_break, completed_at, rank_key, last_sequence from {names.Own(StandingsProjection.CurrentTable)}", connection))
            await using (var reader = await command.ExecuteReaderAsync(ct))
            {
                while (await reader.ReadAsync(ct))
                {
                    liveCurrent[$"{reader.GetString(0)}/{reader.GetString(1)}"] = Render(Value(reader, 2), Value(reader, 3), Value(reader, 4),
                        reader.IsDBNull(5) ? null : reader.GetFieldValue<DateTimeOffset>(5), Value(reader, 6), reader.GetInt64(7));
                }
            }
            await using (var command = new NpgsqlCommand(
                             $"""
                             select board, participant, sequence, at, run_id, score, tie_break, completed_at, rank_key,
                                 case when superseded_at is null then 'not filled' when superseded_at = 'infinity' then 'in force'
                                      else to_char(superseded_at at time zone 'UTC', '{MicrosecondsPattern}') end
                             from {names.Own(StandingsProjection.ChangesTable)}
                             """, connection))
            await using (var reader = await command.ExecuteReaderAsync(ct))
            {
                while (await reader.ReadAsync(ct))
                {
                    liveChanges[$"{reader.GetString(0)}/{reader.GetString(1)}@{reader.GetInt64(2)}"] = Render(reader.GetFieldValue<DateTimeOffset>(3),
                        Value(reader, 4), Value(reader, 5), Value(reader, 6), reader.IsDBNull(7) ? null : reader.GetFieldValue<DateTimeOffset>(7), Value(reader, 8),
                        reader.GetString(9));
                }
            }
        }
        return Differ("board", expectedCurrent, liveCurrent).Concat(Differ("board-change", expectedChanges, liveChanges)).Take(200).ToList();
    }

    // The same instant, to the microsecond PostgreSQL keeps, in C# and in PostgreSQL's to_char.
    private const string MicrosecondsPattern = "YYYY-MM-DD\"T\"HH24:MI:SS.US";
    private static string Microseconds(DateTimeOffset t) =>
        ToMicroseconds(t).ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff", System.Globalization.CultureInfo.InvariantCulture);
    private static DateTime ToMicroseconds(DateTimeOffset t) => new(t.UtcTicks - t.UtcTicks % 10, DateTimeKind.Utc);

    private static object? Value(NpgsqlDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : reader.GetValue(ordinal);

    private static IEnumerable<string> Differ(string label, Dictionary<string, string> expected, Dictionary<string, string> live)
    {
        foreach (var (key, value) in expected.OrderBy(e => e.Key, StringComparer.Ordinal))
        {
            if (!live.TryGetValue(key, out var actual)) yield return $"{label}/{key}: missing from the live projection";
            else if (actual != value) yield return $"{label}/{key}: live [{actual}] but the fold derives [{value}]";
        }
        foreach (var key in live.Keys.Where(k => !expected.ContainsKey(k)).Order(StringComparer.Ordinal))
        {
            yield return $"{label}/{key}: in the live projection but not derivable from the events";
        }
    }

    private DocumentStore ScratchStore(string scratch) => DocumentStore.For(o =>
    {
        o.UseLedgerStorage(database.ConnectionString, scratch);
        o.Schema.For<Run>();
        o.Schema.For<LeaseHolder>();
        o.Schema.For<Standing>();
        o.Schema.For<AnomalyRecord>();
    });

    private static async Task WriteScratch(DocumentStore scratchStore, IEnumerable<Run> runs, IEnumerable<LeaseHolder> leases,
        IEnumerable<Standing> standings, IEnumerable<AnomalyRecord> anomalies, CancellationToken ct)
    {
        await scratchStore.Storage.ApplyAllConfiguredChangesToDatabaseAsync();
        await scratchStore.Advanced.Clean.DeleteAllDocumentsAsync(ct);
        await scratchStore.BulkInsertDocumentsAsync(runs, BulkInsertMode.InsertsOnly, 1000, ct);
        await scratchStore.BulkInsertDocumentsAsync(leases, BulkInsertMode.InsertsOnly, 1000, ct);
        await scratchStore.BulkInsertDocumentsAsync(standings, BulkInsertMode.InsertsOnly, 1000, ct);
        await scratchStore.BulkInsertDocumentsAsync(anomalies, BulkInsertMode.InsertsOnly, 1000, ct);
    }

    private async Task<List<string>> Compare(string live, string scratch, string label, string filter, CancellationToken ct,
        string? ignoredKey = null)
    {
        var data = ignoredKey is null ? "data" : $"data - '{ignoredKey}' as data";
        var sql = $"""
            with l as (select id, {data} from {live} {filter}),
                 s as (select id, {data} from {scratch})
            select coalesce(l.id, s.id)::text, l.id is null, s.id is null, l.data::text, s.data::text
            from l full outer join s on l.id = s.id
            where l.data is distinct from s.data
            order by 1 limit 200
            """;
        var differences = new List<string>();
        await using var connection = new NpgsqlConnection(database.ConnectionString);
        await connection.OpenAsync(ct);
        await using var command = new NpgsqlCommand(sql, connection);
        await using var reader = await command.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
        {
            var id = reader.GetString(0);
            differences.Add(reader.GetBoolean(1) ? $"{label}/{id}: missing from the live projection"
                : reader.GetBoolean(2) ? $"{label}/{id}: in the live projection but not derivable from the events"
                : $"{label}/{id}: live and rebuilt differ: {JsonDiff.Describe(reader.GetString(3), reader.GetString(4))}");
        }
        return differences;
    }
}
