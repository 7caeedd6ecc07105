using System.Net;
using System.Text.Json;
using Ledger.Contract;
using Ledger.Infrastructure;
using Ledger.Runs;
using Ledger.Tests.Fixtures;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Runs;

/// <summary>
/// A worker whose connection drops after the ledger acted, before the answer arrived, sends the
/// same request again. Registration and claim must answer that retry as they answered the first
/// time, never with a second run or a 409 for the worker's own lease.
/// </summary>
public sealed class RetrySafetyTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    private Task<Response> Register(object body) => _api.Send(HttpMethod.Post, "/api/runs", LedgerHost.AdminKey, body);

    private Task<Response> Claim(string runId, object body) =>
        _api.Send(HttpMethod.Post, $"/api/runs/{runId}/claim", LedgerHost.WorkerKey, body);

    private async Task<List<string>> History(string runId) =>
        (await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/events", LedgerHost.AdminKey)).Json!["events"]!.AsArray()
        .Select(e => e!["type"]!.GetValue<string>()).ToList();

    [Fact]
    public async Task registering_the_same_run_again_answers_as_the_first_time_and_makes_no_second_run()
    {
        var runId = NewRunId("retry");
        var definition = new
        {
            runId, participant = "team-a", batch = "retry-batch", labels = new Dictionary<string, string> { ["region"] = "eu-west" },
            requiredScores = new[] { "accuracy", "f1" }, requiredOutputs = new[] { "predictions" }, expectedItems = 10, leaseSeconds = 120,
        };
        var first = await Register(definition);
        var again = await Register(definition);

        Assert.Equal(HttpStatusCode.Created, first.Status);
        Assert.Equal(HttpStatusCode.Created, again.Status);
        Assert.Equal(first.Text, again.Text);
        Assert.Equal(["run.registered"], await History(runId));
    }

    [Fact]
    public async Task the_same_definition_with_labels_spelled_by_alias_and_scores_reordered_is_the_same_registration()
    {
        var runId = NewRunId("retry");
        await _api.Register(new { runId, labels = new Dictionary<string, string> { ["region"] = "eu-west" }, requiredScores = new[] { "a", "b" } });
        var again = await Register(new { runId, labels = new Dictionary<string, string> { ["region"] = "EU" }, requiredScores = new[] { "b", "a" } });
        Assert.Equal(HttpStatusCode.Created, again.Status);
        Assert.Equal(runId, again.Json!["runId"]!.GetValue<string>());
    }

    [Fact]
    public async Task the_same_run_id_with_another_definition_is_refused_as_run_exists()
    {
        var runId = NewRunId("retry");
        await _api.Register(new { runId, requiredScores = new[] { "accuracy" } });
        var other = await Register(new { runId, requiredScores = new[] { "loss" } });

        Assert.Equal(HttpStatusCode.Conflict, other.Status);
        Assert.Equal("run-exists", other.ProblemCode);
        Assert.False(other.Retryable);
        Assert.Equal(["run.registered"], await History(runId));
    }

    [Fact]
    public async Task two_identical_registrations_at_the_same_moment_make_one_run_and_both_are_answered_201()
    {
        var runId = NewRunId("retry");
        var body = new { runId, requiredScores = new[] { "accuracy" } };
        var answers = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Register(body)));
        Assert.All(answers, a => Assert.Equal(HttpStatusCode.Created, a.Status));
        Assert.Equal(["run.registered"], await History(runId));
    }

    [Fact]
    public async Task the_claim_answer_carries_the_runs_requirements()
    {
        var runId = await _api.Register(new { runId = NewRunId("retry"), requiredScores = new[] { "accuracy" }, requiredOutputs = new[] { "predictions" }, expectedItems = 42 });
        var claim = await Claim(runId, new { worker = "w1", claimId = "c-1" });

        Assert.Equal(HttpStatusCode.OK, claim.Status);
        var json = claim.Json!;
        Assert.StartsWith("lt_", json["leaseToken"]!.GetValue<string>());
        Assert.NotNull(json["leaseExpiresAt"]);
        Assert.Equal(["accuracy"], json["requiredScores"]!.AsArray().Select(s => s!.GetValue<string>()));
        Assert.Equal(["predictions"], json["requiredOutputs"]!.AsArray().Select(s => s!.GetValue<string>()));
        Assert.Equal(42, json["expectedItems"]!.GetValue<long>());

        var bare = await _api.Register(new { runId = NewRunId("retry") });
        var plain = (await Claim(bare, new { worker = "w1" })).Json!;
        Assert.Empty(plain["requiredScores"]!.AsArray());
        Assert.Empty(plain["requiredOutputs"]!.AsArray());
        Assert.Null(plain["expectedItems"]);
    }

    [Fact]
    public async Task the_same_claim_again_answers_the_same_lease_and_appends_nothing()
    {
        var runId = await _api.Register(new { runId = NewRunId("retry"), leaseSeconds = 60 });
        var first = await Claim(runId, new { worker = "w1", claimId = "claim-7f3a" });
        ledger.Clock.Advance(TimeSpan.FromSeconds(5));
        var again = await Claim(runId, new { worker = "w1", claimId = "claim-7f3a" });

        Assert.Equal(HttpStatusCode.OK, again.Status);
        Assert.Equal(first.Json!["leaseToken"]!.GetValue<string>(), again.Json!["leaseToken"]!.GetValue<string>());
        Assert.Equal(first.Json!["leaseExpiresAt"]!.GetValue<DateTimeOffset>(), again.Json!["leaseExpiresAt"]!.GetValue<DateTimeOffset>());
        Assert.Equal(["run.registered", "run.claimed"], await History(runId));

        // The token answered twice is the lease: events with it are taken.
        var token = again.Json!["leaseToken"]!.GetValue<string>();
        var events = await _api.Events(runId, token, Event("run.started"));
        Assert.Equal(HttpStatusCode.OK, events.Status);
    }

    [Fact]
    public async Task the_same_claim_after_a_heartbeat_answers_the_lease_as_it_now_stands()
    {
        var runId = await _api.Register(new { runId = NewRunId("retry"), leaseSeconds = 60 });
        var first = await Claim(runId, new { worker = "w1", claimId = "claim-hb" });
        var token = first.Json!["leaseToken"]!.GetValue<string>();
        ledger.Clock.Advance(TimeSpan.FromSeconds(30));
        await _api.Events(runId, token, Event("heartbeat"));

        var again = await Claim(runId, new { worker = "w1", claimId = "claim-hb" });
        Assert.Equal(token, again.Json!["leaseToken"]!.GetValue<string>());
        Assert.True(again.Json!["leaseExpiresAt"]!.GetValue<DateTimeOffset>() > first.Json!["leaseExpiresAt"]!.GetValue<DateTimeOffset>());
    }

    [Fact]
    public async Task another_claim_id_or_another_worker_while_the_lease_is_live_stays_lease_held()
    {
        var runId = await _api.Register(new { runId = NewRunId("retry"), leaseSeconds = 60 });
        await Claim(runId, new { worker = "w1", claimId = "mine" });

        var otherId = await Claim(runId, new { worker = "w1", claimId = "theirs" });
        var otherWorker = await Claim(runId, new { worker = "w2", claimId = "mine" });
        var noId = await Claim(runId, new { worker = "w1" });

        foreach (var refused in new[] { otherId, otherWorker, noId })
        {
            Assert.Equal(HttpStatusCode.Conflict, refused.Status);
            Assert.Equal("lease-held", refused.ProblemCode);
            Assert.DoesNotContain("lt_", refused.Text);
        }
        Assert.Equal(["run.registered", "run.claimed"], await History(runId));
    }

    [Fact]
    public async Task the_same_claim_id_from_another_key_is_refused_lease_held_and_gets_no_token()
    {
        var runId = await _api.Register(new { runId = NewRunId("retry"), leaseSeconds = 60 });
        var first = await Claim(runId, new { worker = "w1", claimId = "bound-to-the-worker-key" });
        Assert.Equal(HttpStatusCode.OK, first.Status);

        // The admin key may claim too, but not take over the worker key's claim by presenting its claimId.
        var byAdmin = await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/claim", LedgerHost.AdminKey, new { worker = "w1", claimId = "bound-to-the-worker-key" });
        var byWorker = await Claim(runId, new { worker = "w1", claimId = "bound-to-the-worker-key" });

        Assert.Equal(HttpStatusCode.Conflict, byAdmin.Status);
        Assert.Equal("lease-held", byAdmin.ProblemCode);
        Assert.DoesNotContain(first.Json!["leaseToken"]!.GetValue<string>(), byAdmin.Text);
        Assert.Equal(HttpStatusCode.OK, byWorker.Status);
        Assert.Equal(first.Json!["leaseToken"]!.GetValue<string>(), byWorker.Json!["leaseToken"]!.GetValue<string>());
        // The key is bound by a keyed digest: neither the key nor its plain digest is in the history.
        var history = (await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/events", LedgerHost.ReadKey)).Text;
        Assert.DoesNotContain(LedgerHost.WorkerKey, history);
        Assert.DoesNotContain(Access.DigestHex(LedgerHost.WorkerKey), history);
        Assert.Contains("claimKeyHash", history);
    }

    [Fact]
    public async Task a_claim_without_claim_id_is_never_answered_again()
    {
        var runId = await _api.Register(new { runId = NewRunId("retry"), leaseSeconds = 60 });
        Assert.Equal(HttpStatusCode.OK, (await Claim(runId, new { worker = "w1" })).Status);
        var again = await Claim(runId, new { worker = "w1" });
        Assert.Equal("lease-held", again.ProblemCode);
    }

    [Fact]
    public async Task once_the_lease_has_expired_the_same_claim_id_takes_a_new_lease_and_the_old_token_is_lost()
    {
        var runId = await _api.Register(new { runId = NewRunId("retry"), leaseSeconds = 30 });
        var first = (await Claim(runId, new { worker = "w1", claimId = "again" })).Json!["leaseToken"]!.GetValue<string>();
        ledger.Clock.Advance(TimeSpan.FromSeconds(31));

        var second = await Claim(runId, new { worker = "w1", claimId = "again" });
        Assert.Equal(HttpStatusCode.OK, second.Status);
        var token = second.Json!["leaseToken"]!.GetValue<string>();
        Assert.NotEqual(first, token);
        Assert.Equal(["run.registered", "run.claimed", "run.claimed"], await History(runId));

        var stale = await _api.Events(runId, first, Event("heartbeat"));
        Assert.Equal("lease-lost", stale.ProblemCode);
        Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, token, Event("heartbeat"))).Status);
    }

    [Fact]
    public async Task a_terminal_run_answers_a_retried_claim_with_run_terminal()
    {
        var runId = await _api.Register(new { runId = NewRunId("retry"), leaseSeconds = 60 });
        await Claim(runId, new { worker = "w1", claimId = "c" });
        await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/cancel", LedgerHost.AdminKey, new { });
        var again = await Claim(runId, new { worker = "w1", claimId = "c" });
        Assert.Equal("run-terminal", again.ProblemCode);
        Assert.Equal("cancelled", again.RunStatus);
    }

    [Theory]
    [InlineData("")]
    [InlineData("a\u0001b")]
    public async Task a_claim_id_is_validated_like_other_identifiers(string claimId)
    {
        var runId = await _api.Register(new { runId = NewRunId("retry") });
        var refused = await Claim(runId, new { worker = "w1", claimId });
        Assert.Equal(HttpStatusCode.UnprocessableEntity, refused.Status);
        Assert.NotNull(refused.Json!["errors"]!["claimId"]);

        var tooLong = await Claim(runId, new { worker = "w1", claimId = new string('c', 201) });
        Assert.Equal(HttpStatusCode.UnprocessableEntity, tooLong.Status);
    }

    [Fact]
    public async Task neither_the_claim_id_nor_the_token_can_be_read_back_from_the_history()
    {
        var runId = await _api.Register(new { runId = NewRunId("retry") });
        var claim = await Claim(runId, new { worker = "w1", claimId = "secret-claim-id" });
        var history = (await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/events", LedgerHost.AdminKey)).Text;
        var run = (await _api.GetRun(runId)).Text;
        foreach (var text in new[] { history, run })
        {
            Assert.DoesNotContain("secret-claim-id", text);
            Assert.DoesNotContain(claim.Json!["leaseToken"]!.GetValue<string>(), text);
        }
    }

    [Fact]
    public async Task a_claim_event_written_before_claim_ids_existed_still_folds_and_verifies()
    {
        // The shape RunClaimed had before claimId: no claimIdHash, no tokenNonce.
        var old = JsonSerializer.Deserialize<RunClaimed>(
            """{"worker":"w0","leaseTokenHash":"00","claimedAt":"2026-01-01T00:00:00Z","leaseExpiresAt":"2026-01-01T00:05:00Z"}""",
            LedgerJson.Options)!;
        Assert.Null(old.ClaimIdHash);
        var run = Run.Create(TestEvents.Registered("old", DateTimeOffset.Parse("2026-01-01T00:00:00Z"), leaseSeconds: 300));
        run.Apply(old);
        Assert.Equal(RunStatus.Claimed, run.Status);
        Assert.Null(run.ClaimIdHash);

        var report = await ledger.Verify();
        Assert.Empty(report.Differences);
    }
}
