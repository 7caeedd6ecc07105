using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Alba;
using CsCheck;
using JasperFx.Events;
using Ledger.Contract;
using Ledger.Infrastructure;
using Ledger.Runs;
using Ledger.Tests.Fixtures;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace Ledger.Tests.Runs;

/// <summary>
/// Snapshots of the history's refold (<see cref="RunSnapshotStore"/>): a read that starts from one
/// must answer exactly what the refold from the first event answers. In memory, on random streams
/// from the whole palette of events (decided or not, recorded at times that sometimes step back);
/// then over HTTP on a host that keeps a snapshot every few versions, against the full refold of
/// the stored stream, for pages and states at random versions and times, including the versions
/// at, just before and just after a snapshot, on a database whose runs have none yet, and on one
/// whose snapshots no longer match their streams.
/// </summary>
public sealed class RunSnapshotTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private const int Every = 4;

    // ---- in memory ----------------------------------------------------------------------------

    [Fact]
    public void a_refold_from_a_stored_snapshot_says_and_reaches_what_the_refold_from_the_start_does()
    {
        Gen.Select(Gen.Int[0, int.MaxValue], Gen.Int[0, 70], Gen.Int[0, 10_000], Gen.Int[0, 10_000]).Sample((seed, length, s, t) =>
        {
            var events = RandomStreams.AsStored(RandomStreams.Make(seed, length, "run-s"), "run-s", firstSequence: 1);
            var whole = RunReplay.Explain(events);

            // A snapshot at any version, stored and read back as the store does.
            var at = 1 + s % events.Count;
            var fold = new RunReplay.Fold();
            foreach (var e in events.Take(at)) fold.Apply(e, explain: false);
            var stored = RunSnapshotStore.Take(fold);
            Assert.Equal(stored.State, RunSnapshotStore.Serialize(RunSnapshotStore.Deserialize(stored.State)));
            Assert.Equal(events.Take(at).Max(RunReplay.RecordedAt), stored.RecordedThrough);
            var snapshot = new RunSnapshot(stored.Version, stored.Sequence, stored.RecordedThrough, RunSnapshotStore.Deserialize(stored.State));

            // Then on to the snapshot's own version, the next one, or any later.
            var rest = events.Count - at;
            var target = at + (t % 3) switch { 0 => 0, 1 => Math.Min(1, rest), _ => t % (rest + 1) };
            var resumed = new RunReplay.Fold(snapshot);
            var entries = events.Skip(at).Take(target - at).Select(e => resumed.Apply(e, explain: true)).ToList();

            Assert.Equal(Json(whole.Entries.Where(e => e.Version > at && e.Version <= target)), Json(entries));
            Assert.Equal(Json(RunReplay.Explain(events.Take(target).ToList()).Run), Json(resumed.Run));
            Assert.Equal(target, resumed.Version);
            Assert.Equal(events.Take(target).Max(RunReplay.RecordedAt), resumed.RecordedThrough);
        }, iter: 2000, print: x => $"seed {x.Item1}, length {x.Item2}, snapshot {x.Item3}, target {x.Item4}");
    }

    [Fact]
    public void a_refold_takes_every_event_in_order()
    {
        var events = RandomStreams.AsStored(RandomStreams.Make(7, 10, "run-o"), "run-o", firstSequence: 1);
        var fold = new RunReplay.Fold();
        fold.Apply(events[0], explain: false);
        Assert.Throws<InvalidOperationException>(() => fold.Apply(events[2], explain: false));
    }

    /// <summary>
    /// The stored snapshots are of one fold (<see cref="RunSnapshotStore.FoldRevision"/>). This digest
    /// of what fixed streams fold to, event by event, changes whenever the fold or the shape of
    /// <see cref="Run"/> does: then snapshots already stored no longer hold what this code would
    /// compute, and the revision must move with the digest (the reads then ignore and refill them).
    /// </summary>
    [Fact]
    public void the_fold_revision_names_the_fold()
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        for (var seed = 1; seed <= 300; seed++)
        {
            var events = RandomStreams.AsStored(RandomStreams.Make(seed, seed % 61, $"run-{seed}"), $"run-{seed}", firstSequence: 1);
            var fold = new RunReplay.Fold();
            foreach (var e in events)
            {
                fold.Apply(e, explain: false);
                hash.AppendData(Encoding.UTF8.GetBytes(RunSnapshotStore.Serialize(fold.Run!)));
            }
        }
        var digest = Convert.ToHexStringLower(hash.GetHashAndReset())[..16];
        Assert.True((RunSnapshotStore.FoldRevision, digest) == (2, "7c34a90fcc245204"),
            $"What the streams fold to changed (digest {digest}): snapshots stored by revision {RunSnapshotStore.FoldRevision} " +
            "no longer match this code. Bump RunSnapshotStore.FoldRevision and pin the new revision and digest here.");
    }

    // ---- over HTTP ----------------------------------------------------------------------------

    [Fact]
    public async Task pages_and_states_read_from_snapshots_are_those_of_the_full_refold()
    {
        await using var host = await Snapshotting();
        var store = host.Services.GetRequiredService<IDocumentStore>();
        var api = new Scenarios(ledger, host);
        var random = new Random(20261130);
        var runs = new List<string>();
        for (var i = 0; i < 8; i++)
        {
            var runId = Scenarios.NewRunId("snap");
            await using var session = store.LightweightSession();
            session.Events.StartStream<Run>(runId, RandomStreams.Make(random.Next(), 6 + random.Next(36), runId));
            await session.SaveChangesAsync();
            runs.Add(runId);
        }

        // Twice: the first reads fill the snapshots in as they go (in a random order), the second all read from them.
        for (var round = 1; round <= 2; round++)
        {
            foreach (var runId in runs.OrderBy(_ => random.Next()))
            {
                var expected = await Refold(store, runId);
                var last = expected.Events[^1].Version;
                var versions = Enumerable.Range(1, (int)last / Every).SelectMany(k => new long[] { k * Every - 1, k * Every, k * Every + 1 })
                    .Concat([1, last, random.NextInt64(1, last + 1)]).Where(v => v >= 1 && v <= last).Distinct().OrderBy(_ => random.Next());
                foreach (var v in versions)
                {
                    await Same(api, $"/api/runs/{runId}/state?version={v}", expected.State(v, null));
                    var limit = random.Next(1, 3 * Every);
                    await Same(api, $"/api/runs/{runId}/events?after={v}&limit={limit}", expected.Page(v, limit));
                }
                foreach (var e in expected.Events.OrderBy(_ => random.Next()).Take(4))
                {
                    // Time travel: exactly at an event's time, a tick before and after it, and at a version too.
                    var recorded = RunReplay.RecordedAt(e);
                    foreach (var time in new[] { recorded, recorded.AddTicks(-1), recorded.AddTicks(1) })
                    {
                        await Same(api, $"/api/runs/{runId}/state?at={Uri.EscapeDataString(time.ToString("O"))}", expected.State(null, time));
                        var v = random.NextInt64(1, last + 1);
                        await Same(api, $"/api/runs/{runId}/state?version={v}&at={Uri.EscapeDataString(time.ToString("O"))}", expected.State(v, time));
                    }
                }
                await Same(api, $"/api/runs/{runId}/state", expected.State(null, null));
                await Same(api, $"/api/runs/{runId}/events", expected.Page(0, GetRunHistoryEndpoint.DefaultLimit));
                await Same(api, $"/api/runs/{runId}/state?version={last + 1}", null);
                await Same(api, $"/api/runs/{runId}/state?at=2000-01-01T00:00:00Z", null);
            }

            // Every multiple of the setting is stored by now, of the stream's own events.
            foreach (var runId in runs)
            {
                var last = (await Refold(store, runId)).Events[^1].Version;
                Assert.Equal(Enumerable.Range(1, (int)last / Every).Select(k => (long)k * Every), await SnapshotVersions(runId));
            }
        }
    }

    [Fact]
    public async Task runs_written_before_snapshots_read_the_same_and_get_them_on_their_first_reads()
    {
        // Written through the API by a host with the default setting (250): runs this short have no snapshot.
        var api = new Scenarios(ledger);
        var (runId, token) = await api.Started();
        var events = Enumerable.Range(0, 17).Select(i => Scenarios.Event(i % 3 == 0 ? "heartbeat" : "log", $"e{i}",
            fields: i % 3 == 0 ? null : new { lines = new[] { $"line {i}" } })).ToArray();
        Assert.Equal(HttpStatusCode.OK, (await api.Events(runId, token, events)).Status);
        Assert.Equal(HttpStatusCode.OK, (await api.Send(HttpMethod.Get, $"/api/runs/{runId}/events?after=12&limit=3", LedgerHost.ReadKey)).Status);
        Assert.Empty(await SnapshotVersions(runId));

        // A host that keeps them every few versions: the same answers, and they fill in.
        await using var host = await Snapshotting();
        var store = host.Services.GetRequiredService<IDocumentStore>();
        var snapshotting = new Scenarios(ledger, host);
        var expected = await Refold(store, runId);
        await Same(snapshotting, $"/api/runs/{runId}/events?after=9&limit=2", expected.Page(9, 2));
        Assert.Equal(new long[] { 4, 8 }, await SnapshotVersions(runId));
        await Same(snapshotting, $"/api/runs/{runId}/state?version=18", expected.State(18, null));
        Assert.Equal(new long[] { 4, 8, 12, 16 }, await SnapshotVersions(runId));
        await Same(snapshotting, $"/api/runs/{runId}/state?version=13", expected.State(13, null));
        await Same(snapshotting, $"/api/runs/{runId}/events?after=3&limit=100", expected.Page(3, 100));
    }

    [Fact]
    public async Task snapshots_that_are_not_of_the_stream_as_it_is_now_are_dropped_and_never_answer()
    {
        await using var host = await Snapshotting();
        var store = host.Services.GetRequiredService<IDocumentStore>();
        var api = new Scenarios(ledger, host);
        var runId = Scenarios.NewRunId("stale");
        await using (var session = store.LightweightSession())
        {
            session.Events.StartStream<Run>(runId, RandomStreams.Make(31, 20, runId));
            await session.SaveChangesAsync();
        }
        var expected = await Refold(store, runId);
        await Same(api, $"/api/runs/{runId}/state?version=21", expected.State(21, null));
        Assert.Equal(new long[] { 4, 8, 12, 16, 20 }, await SnapshotVersions(runId));

        // The snapshot at 12 claims another event's sequence (as after the stream was deleted and
        // written again), and the one at 16 holds a state of another fold revision: neither answers.
        await Execute($"update {Snapshots} set sequence = sequence + 1000000 where run_id = @run and version = 12", runId);
        await Execute($"update {Snapshots} set revision = revision + 1, state = '{{\"status\":\"succeeded\"}}' " +
                      "where run_id = @run and version = 16", runId);
        await Same(api, $"/api/runs/{runId}/state?version=14", expected.State(14, null));
        Assert.Equal(new long[] { 4, 8, 12 }, await SnapshotVersions(runId));
        await Same(api, $"/api/runs/{runId}/events?after=15&limit=4", expected.Page(15, 4));
        await Same(api, $"/api/runs/{runId}/state?version=17", expected.State(17, null));
        Assert.Equal(new long[] { 4, 8, 12, 16 }, await SnapshotVersions(runId));
    }

    // ---- helpers ------------------------------------------------------------------------------

    private string Snapshots => ledger.Host.Services.GetRequiredService<StorageNames>().Own(RunSnapshotStore.TableName);

    private Task<IAlbaHost> Snapshotting() =>
        ledger.SecondInstance(new Dictionary<string, string> { ["Ledger:History:SnapshotEvery"] = Every.ToString() });

    /// <summary>What the endpoints answered before snapshots: everything cut from the refold of the whole stream.</summary>
    private sealed record Expected(string RunId, IReadOnlyList<IEvent> Events)
    {
        private readonly RunReplay.Explained _whole = RunReplay.Explain(Events);

        public string Page(long after, int limit)
        {
            var page = _whole.Entries.Where(e => e.Version > after).Take(limit).ToList();
            long? next = page.Count == limit && page[^1].Version < _whole.Run.Version ? page[^1].Version : null;
            return JsonSerializer.Serialize(new RunHistory(RunId, _whole.Run.Status, _whole.Run.Version, page, next), LedgerJson.Options);
        }

        /// <summary>Null: no such state (404).</summary>
        public string? State(long? version, DateTimeOffset? at)
        {
            var upTo = Events.TakeWhile(e => (version is null || e.Version <= version) && (at is null || RunReplay.RecordedAt(e) <= at)).ToList();
            if (upTo.Count == 0 || version > Events[^1].Version) return null;
            var run = RunReplay.Explain(upTo).Run;
            return JsonSerializer.Serialize(new RunStateAsOf(upTo[^1].Version, RunReplay.RecordedAt(upTo[^1]), RunView.From(run)), LedgerJson.Options);
        }
    }

    private static async Task<Expected> Refold(IDocumentStore store, string runId)
    {
        await using var session = store.QuerySession();
        return new Expected(runId, await session.Events.FetchStreamAsync(runId));
    }

    private static async Task Same(Scenarios api, string url, string? expected)
    {
        var response = await api.Send(HttpMethod.Get, url, LedgerHost.ReadKey);
        if (expected is null)
        {
            Assert.True(response.Status == HttpStatusCode.NotFound, $"{url}: {response.Status} {response.Text}");
            Assert.Equal(ProblemCodes.StateNotFound, response.ProblemCode);
            return;
        }
        Assert.True(response.Status == HttpStatusCode.OK, $"{url}: {response.Status} {response.Text}");
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse(expected), response.Json), $"{url}:\n  expected {expected}\n  answered {response.Text}");
    }

    private async Task<List<long>> SnapshotVersions(string runId)
    {
        await using var conn = new NpgsqlConnection(ledger.ConnectionString);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand(
            $"select version from {Snapshots} where run_id = @run and revision = {RunSnapshotStore.FoldRevision} order by version", conn);
        cmd.Parameters.AddWithValue("run", runId);
        var versions = new List<long>();
        await using var reader = await cmd.ExecuteReaderAsync();
        while (await reader.ReadAsync()) versions.Add(reader.GetInt64(0));
        return versions;
    }

    private async Task Execute(string sql, string runId)
    {
        await using var conn = new NpgsqlConnection(ledger.ConnectionString);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand(sql, conn);
        cmd.Parameters.AddWithValue("run", runId);
        Assert.Equal(1, await cmd.ExecuteNonQueryAsync());
    }

    private static string Json<T>(T value) => JsonSerializer.Serialize(value, LedgerJson.Options);
}

/// <summary>
/// Streams as the store could hold them, decided or not: a registration, a claim, then events from
/// the whole palette (worker events, claims, cancels, expiries, reclassifications, verdicts,
/// observations), recorded at times that mostly move on by up to a few seconds (to the tick) and now
/// and then step back, as the clocks of several nodes would. Deterministic for a seed.
/// </summary>
public static class RandomStreams
{
    private static readonly DateTimeOffset T0 = new(2025, 6, 1, 9, 0, 0, TimeSpan.Zero);
    private static readonly string[] Steps = ["s1", "s2", "s3"];
    private static readonly string[] ScoreNames = ["acc", "f1", "loss"];
    private static readonly string[] Outputs = ["model", "pred"];

    public static object[] Make(int seed, int length, string runId)
    {
        var r = new Random(seed);
        var clock = T0;
        DateTimeOffset Tick()
        {
            clock = clock.AddSeconds(r.Next(0, 4)).AddTicks(r.Next(0, 20_000));
            return r.Next(8) == 0 ? clock.AddSeconds(-r.Next(1, 30)) : clock;
        }
        string[] required = r.Next(3) switch { 0 => [], 1 => ["acc"], _ => ["acc", "f1"] };
        string[] outputs = r.Next(3) switch { 0 => [], 1 => ["model"], _ => ["model", "pred"] };
        long? expected = r.Next(3) == 0 ? null : r.Next(0, 12);
        var labels = r.Next(2) == 0 ? new Dictionary<string, string>() : new Dictionary<string, string> { ["region"] = "EU", ["gpu"] = "a100" };
        var registeredAt = Tick();
        var claimedAt = Tick();
        var events = new List<object>
        {
            TestEvents.Registered(runId, registeredAt, 60, required, outputs, expected, r.Next(2) == 0 ? null : "board", "team", labels),
            new RunClaimed("worker-1", "hash-1", claimedAt, claimedAt.AddSeconds(60)),
        };
        for (var i = 0; i < length; i++) events.Add(Next(r, i, Tick()));
        return [.. events];
    }

    private static object Next(Random r, int i, DateTimeOffset at)
    {
        var id = $"e{i}";
        var occurred = at.AddSeconds(-r.Next(0, 5));
        return r.Next(22) switch
        {
            0 => new RunStarted { EventId = id, OccurredAt = occurred, RecordedAt = at },
            1 or 2 => new StepStarted { EventId = id, OccurredAt = occurred, RecordedAt = at, StepId = Pick(r, Steps), Name = r.Next(2) == 0 ? null : "step" },
            3 or 4 => new StepCompleted { EventId = id, OccurredAt = occurred, RecordedAt = at, StepId = r.Next(6) == 0 ? "ghost" : Pick(r, Steps), Outcome = "ok" },
            5 => new HeartbeatReceived { EventId = id, OccurredAt = occurred, RecordedAt = at },
            6 or 7 => new LogWritten { EventId = id, OccurredAt = occurred, RecordedAt = at, Lines = Enumerable.Repeat($"line {i}", r.Next(1, 4)).ToArray() },
            8 or 9 => new ScoresReported
            {
                EventId = id, OccurredAt = occurred, RecordedAt = at,
                Scores = Enumerable.Range(0, r.Next(1, 3)).Select(_ => Pick(r, ScoreNames)).Distinct()
                    .ToDictionary(n => n, _ => r.Next(4) * 0.25 + r.Next(2) * 0.1),
            },
            10 => new OutputRecorded
            {
                EventId = id, OccurredAt = occurred, RecordedAt = at, Name = Pick(r, Outputs), Uri = r.Next(2) == 0 ? "s3://b/one" : "s3://b/two",
                Sha256 = r.Next(2) == 0 ? null : "ab", Bytes = r.Next(3) switch { 0 => null, 1 => 0, _ => 1024 },
            },
            11 or 12 => new ItemsCommitted { EventId = id, OccurredAt = occurred, RecordedAt = at, ChunkId = $"c{r.Next(5)}", Count = r.Next(0, 5) },
            13 => new RunCompleted
            {
                EventId = id, OccurredAt = occurred, RecordedAt = at, ItemsTotal = r.Next(2) == 0 ? null : r.Next(0, 12),
                Warnings = r.Next(3) == 0 ? ["slow"] : null,
            },
            14 => new RunFailed { EventId = id, OccurredAt = occurred, RecordedAt = at, ErrorClass = "timeout", Message = r.Next(2) == 0 ? null : "took too long" },
            15 => new RunCancelled(r.Next(2) == 0 ? null : "operator", at),
            16 => new LeaseExpired(at.AddSeconds(-1), at),
            17 => new RunReclassified(RunStatus.Failed, null, Pick(r, [RunStatus.Succeeded, RunStatus.Failed, RunStatus.Lost, RunStatus.Cancelled]),
                "review", ["evidence"], r.Next(2) == 0 ? null : "op", at),
            18 => new RunClaimed("worker-2", "hash-2", at, at.AddSeconds(60), r.Next(2) == 0 ? null : "claim", r.Next(2) == 0 ? null : "nonce"),
            19 => new VerdictReached("run", RunStatus.Failed, null, null, null, null, new Dictionary<string, double>(), at, "ledger"),
            _ => new StatusObserved(r.Next(2) == 0 ? "modal" : "portal", Pick(r, Enum.GetValues<RunStatus>()), at.AddMinutes(-r.Next(0, 3)),
                r.Next(2) == 0 ? null : "seen", at),
        };
    }

    private static T Pick<T>(Random r, IReadOnlyList<T> values) => values[r.Next(values.Count)];

    /// <summary>The events as a fetch of the stream gives them: versions from 1, sequences as given.</summary>
    public static IReadOnlyList<IEvent> AsStored(object[] events, string runId, long firstSequence) =>
        events.Select((data, i) =>
        {
            var e = (IEvent)Activator.CreateInstance(typeof(Event<>).MakeGenericType(data.GetType()), data)!;
            e.Version = i + 1;
            e.Sequence = firstSequence + i;
            e.StreamKey = runId;
            return e;
        }).ToList();
}
