using System.Net;
using Ledger.Runs;
using Ledger.Tests.Fixtures;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Runs;

/// <summary>
/// The writer decides a run it wrote last on the state and version its commit left, without
/// reading it (WriterOptions.CachedRuns). Whenever that kept state is not the run's state any
/// more, nothing is appended on it: the group is read again and decided on what is stored. And a
/// refused attempt leaves no gap in the event sequence, which the async daemon would wait on.
/// </summary>
public sealed class RunWriterCacheTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);
    private readonly LedgerSql _sql = new(ledger.ConnectionString);

    [Fact]
    public async Task a_run_another_node_wrote_since_is_decided_on_what_that_node_recorded()
    {
        await using var other = await ledger.SecondInstance();
        var node = new Scenarios(ledger, other);
        var (runId, token) = await _api.Started(new { runId = NewRunId("moved") });
        // This node keeps the run running, at this version.
        Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, token, Event("run.started"))).Status);
        Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, token, Event("log", fields: new { lines = new[] { "one" } }))).Status);

        // The other node finishes it.
        var completed = await node.Events(runId, token, Event("run.completed"));
        Assert.True(completed.Status == HttpStatusCode.OK, completed.Text);
        Assert.Equal("succeeded", completed.RunStatus);

        // This node's next event is late on a finished run (recorded, flagged, 409), as the stored run says, not applied to a running one.
        var late = await _api.Events(runId, token, Event("log", "late-1", fields: new { lines = new[] { "late" } }));
        Assert.True(late.Status == HttpStatusCode.Conflict, late.Text);
        Assert.Equal("run-terminal", late.ProblemCode);
        Assert.Equal("recorded-not-applied", late.Json!["results"]![0]!["result"]!.GetValue<string>());
        Assert.Equal("succeeded", (await _api.Run(runId))["status"]!.GetValue<string>());
        Assert.Equal(1, await _sql.Count(runId, "late-1"));
        await NoGapInTheEventSequence();
    }

    [Fact]
    public async Task a_refusal_is_never_decided_on_a_kept_state_another_node_has_moved_on_from()
    {
        await using var other = await ledger.SecondInstance();
        var node = new Scenarios(ledger, other);
        var runId = await _api.Register(new { runId = NewRunId("reclaimed"), leaseSeconds = 30 });
        var first = await _api.Claim(runId, "worker-1");
        Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, first, Event("run.started"))).Status);

        // The lease runs out and another node hands the run to another worker.
        ledger.Clock.Advance(TimeSpan.FromSeconds(31));
        var second = await node.Claim(runId, "worker-2");

        // This node kept the run leased to the first worker; the second worker's events are the run's now.
        var answer = await _api.Events(runId, second, Event("log", "by-second", fields: new { lines = new[] { "x" } }));
        Assert.True(answer.Status == HttpStatusCode.OK, answer.Text);
        Assert.Equal("applied", answer.Json!["results"]![0]!["result"]!.GetValue<string>());
        var stale = await _api.Events(runId, first, Event("log", "by-first", fields: new { lines = new[] { "x" } }));
        Assert.Equal("lease-lost", stale.ProblemCode);
        await NoGapInTheEventSequence();
    }

    [Fact]
    public async Task a_group_with_one_moved_run_appends_nothing_and_draws_no_sequence_number_before_it_is_decided_again()
    {
        await using var a = await ledger.SecondInstance();
        await using var b = await ledger.SecondInstance();
        var (nodeA, nodeB) = (new Scenarios(ledger, a), new Scenarios(ledger, b));
        // Node A keeps three runs; node B moves the middle one (in lock order), so that whatever order
        // the appends take, one of a kept run comes before the moved run's.
        var runs = new List<(string RunId, string Token)>();
        foreach (var prefix in new[] { "g1-", "g2-", "g3-" }) runs.Add(await nodeA.Started(new { runId = prefix + NewRunId("kept") }));
        foreach (var (runId, token) in runs) Assert.Equal(HttpStatusCode.OK, (await nodeA.Events(runId, token, Event("run.started"))).Status);
        var moved = runs[1];
        Assert.Equal(HttpStatusCode.OK, (await nodeB.Events(moved.RunId, moved.Token, Event("log", "by-b", fields: new { lines = new[] { "b" } }))).Status);

        // Node A's writer waits on another run's row while the three commands queue: they make one group.
        var blocker = await nodeA.Started(new { runId = "g0-" + NewRunId("blocker") });
        await using var hold = await RowLock.Stream(ledger.ConnectionString, blocker.RunId);
        var blocked = nodeA.Events(blocker.RunId, blocker.Token, Event("heartbeat"));
        await hold.WaitForWaiter();
        var sent = runs.Select((r, i) => nodeA.Events(r.RunId, r.Token, Event("log", $"a-{i}", fields: new { lines = new[] { "a" } }))).ToList();
        await Wait.ForQueued(a, runs.Count);
        await hold.Release();

        Assert.Equal(HttpStatusCode.OK, (await blocked).Status);
        Assert.All(await Task.WhenAll(sent), answer => Assert.True(answer.Status == HttpStatusCode.OK, answer.Text));
        Assert.Equal(["by-b", "a-1"], (await _sql.EventIds(moved.RunId)).Where(id => id is "by-b" or "a-1"));
        for (var i = 0; i < runs.Count; i++) Assert.Equal(1, await _sql.Count(runs[i].RunId, $"a-{i}"));
        await NoGapInTheEventSequence();
    }

    [Fact]
    public async Task a_kept_state_made_stale_by_an_append_outside_any_writer_is_never_decided_on()
    {
        var (runId, token) = await _api.Started(new { runId = NewRunId("stale") });
        Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, token, Event("run.started"))).Status);

        // Something other than a writer appends to the stream (an operator's tool, a migration): the run is cancelled.
        var store = ledger.Host.Services.GetRequiredService<IDocumentStore>();
        await using (var session = store.LightweightSession())
        {
            session.Events.Append(runId, new RunCancelled("stopped by hand", ledger.Clock.GetUtcNow()));
            await session.SaveChangesAsync();
        }

        var answer = await _api.Events(runId, token, Event("log", "after-cancel", fields: new { lines = new[] { "x" } }));
        Assert.True(answer.Status == HttpStatusCode.Conflict, answer.Text);
        Assert.Equal("cancelled", answer.RunStatus);
        Assert.Equal("cancelled", (await _api.Run(runId))["status"]!.GetValue<string>());
        await NoGapInTheEventSequence();
    }

    [Fact]
    public async Task a_resend_of_an_event_older_than_the_keys_the_writer_keeps_is_still_a_duplicate()
    {
        var (runId, token) = await _api.Started(new { runId = NewRunId("old-key") });
        // More events than the writer keeps keys of (64): the first ones are only in the keys' table.
        for (var batch = 0; batch < 3; batch++)
        {
            var events = Enumerable.Range(0, 100).Select(i => Event("log", $"e-{batch}-{i}", fields: new { lines = new[] { "x" } })).ToArray();
            Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, token, events)).Status);
        }
        var resend = await _api.Events(runId, token, new[]
        {
            Event("log", "e-0-0", fields: new { lines = new[] { "x" } }),
            Event("log", "fresh", fields: new { lines = new[] { "y" } }),
        });
        Assert.True(resend.Status == HttpStatusCode.OK, resend.Text);
        Assert.Equal(["duplicate", "applied"], resend.Json!["results"]!.AsArray().Select(r => r!["result"]!.GetValue<string>()));
        Assert.Equal(1, await _sql.Count(runId, "e-0-0"));
        Assert.Equal(1, await _sql.Count(runId, "fresh"));

        // A chunk id committed long ago, sent again with another count: refused as it always was.
        Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, token, Event("items.committed", "c-1", fields: new { chunkId = "chunk-a", count = 3 }))).Status);
        for (var batch = 3; batch < 6; batch++)
        {
            var events = Enumerable.Range(0, 100).Select(i => Event("log", $"e-{batch}-{i}", fields: new { lines = new[] { "x" } })).ToArray();
            Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, token, events)).Status);
        }
        var conflict = await _api.Events(runId, token, Event("items.committed", "c-2", fields: new { chunkId = "chunk-a", count = 4 }));
        Assert.Equal("chunk-conflict", conflict.ProblemCode);
        Assert.Equal(0, await _sql.Count(runId, "c-2"));
        await NoGapInTheEventSequence();
    }

    [Fact]
    public async Task a_chunk_committed_while_running_and_sent_again_after_the_verdict_is_recorded_late_like_any_event()
    {
        var (runId, token) = await _api.Started(new { runId = NewRunId("late-chunk") });
        Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, token, Event("items.committed", "k-1", fields: new { chunkId = "chunk-z", count = 5 }))).Status);
        Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, token, Event("run.completed", "k-2"))).Status);
        // A finished run no longer checks chunk ids: the same chunk under a new eventId is a late event, twice.
        foreach (var eventId in new[] { "k-3", "k-4" })
        {
            var late = await _api.Events(runId, token, Event("items.committed", eventId, fields: new { chunkId = "chunk-z", count = 5 }));
            Assert.True(late.Status == HttpStatusCode.Conflict, late.Text);
            Assert.Equal("recorded-not-applied", late.Json!["results"]![0]!["result"]!.GetValue<string>());
            Assert.Equal(1, await _sql.Count(runId, eventId));
        }
    }

    [Fact]
    public async Task with_no_runs_kept_every_group_reads_its_runs_and_decides_the_same()
    {
        await using var reading = await ledger.SecondInstance(new Dictionary<string, string> { ["Ledger:Writer:CachedRuns"] = "0" });
        var node = new Scenarios(ledger, reading);
        var (runId, token) = await node.Started(new { runId = NewRunId("uncached") });
        Assert.Equal(HttpStatusCode.OK, (await node.Events(runId, token, Event("run.started", "s-1"))).Status);
        var again = await node.Events(runId, token, Event("run.started", "s-1"));
        Assert.Equal("duplicate", again.Json!["results"]![0]!["result"]!.GetValue<string>());
        Assert.Equal("running", (await node.Run(runId))["status"]!.GetValue<string>());
    }

    /// <summary>Every number the event sequence handed out is an event: no refused attempt drew one.</summary>
    private async Task NoGapInTheEventSequence()
    {
        var gaps = await _sql.Scalar<long>("select coalesce(max(seq_id) - min(seq_id) + 1 - count(*), 0) from {schema}.mt_events");
        Assert.Equal(0, gaps);
    }
}
