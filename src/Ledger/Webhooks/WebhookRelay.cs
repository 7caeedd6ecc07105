using System.Text.Json;
using JasperFx.Events;
using JasperFx.Events.Daemon;
using JasperFx.Events.Projections;
using Ledger.Contract;
using Ledger.Infrastructure;
using Ledger.Runs;
using Marten;
using Wolverine;
using Wolverine.Marten.Subscriptions;

namespace Ledger.Webhooks;

/// <summary>
/// Turns committed events into deliveries. A Marten event subscription, run by the async daemon
/// wherever the projections run, so it only ever sees committed events, and its progress is kept
/// in mt_event_progression. Each page's delivery log documents and outbox messages
/// (<see cref="DeliverWebhook"/>) are committed in one transaction with that progress: a delivery
/// exists if and only if its verdict or anomaly was committed, and a page replayed after a crash
/// finds its deliveries already logged (same deliveryId) and enqueues nothing twice.
/// </summary>
public sealed class WebhookRelay : BatchSubscription
{
    public const string Name = "webhooks";

    // Every field of the pinned body is present, null when it does not apply (anomalyKind of a verdict).
    private static readonly JsonSerializerOptions PayloadJson = new(LedgerJson.Options)
    {
        DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.Never,
    };

    private Func<RunHistoryReader>? _reader;
    private RunHistoryReader? _read;

    // Every event type: anomalies are derived by the fold of any event of a run, not only by verdicts.
    // From the start of the store, not "from present": a floor re-applied at a restart would skip
    // what was committed while no node ran the daemon. Subscriptions skip what precedes them (FromSequence).
    public WebhookRelay() : base(Name)
    {
    }

    /// <summary>Where the relay reads runs from: the history's reader, resolved at the first page (it reads through the store the relay is part of).</summary>
    public void ReadRunsWith(Func<RunHistoryReader> reader) => _reader = reader;

    private RunHistoryReader History => _read ??= _reader?.Invoke()
        ?? throw new InvalidOperationException("The webhook relay was not given the history's reader (WebhooksConfiguration.AddWebhookRelay).");

    public override async Task ProcessEventsAsync(EventRange page, ISubscriptionController controller, IDocumentOperations operations,
        IMessageBus bus, CancellationToken cancellationToken)
    {
        var subscriptions = await operations.Query<WebhookSubscription>().ToListAsync(cancellationToken);
        if (subscriptions.Count == 0 || page.Events.Count == 0) return;

        var candidates = new List<(WebhookSubscription Subscription, WebhookPayload Payload)>();
        foreach (var e in page.Events)
        {
            foreach (var (source, payload) in RunNotices(e))
            {
                foreach (var s in subscriptions.Where(s => s.FromSequence < e.Sequence && s.Wants(payload.Kind, null)))
                {
                    candidates.Add((s, payload with { DeliveryId = WebhookDelivery.IdFor(s.Id, source) }));
                }
            }
        }

        if (subscriptions.Any(s => s.Kinds.Contains(WebhookKinds.AnomalyFlagged)))
        {
            // The anomalies a page's events raised: those the fold has after the page's last event
            // of a run and did not have before its first (the writer stored the same ones, as AnomalyRecords).
            using var span = Ledger.Operations.LedgerTracing.Step("ledger.webhooks.anomalies");
            long read = 0;
            foreach (var stream in page.Events.GroupBy(e => e.StreamKey!))
            {
                var firstSequence = stream.Min(e => e.Sequence);
                if (!subscriptions.Any(s => s.FromSequence < firstSequence && s.Kinds.Contains(WebhookKinds.AnomalyFlagged))) continue;
                var (before, after, folded) = await AroundAsync(stream.Key, stream.OrderBy(e => e.Version).ToList(), cancellationToken);
                read += folded;
                if (after is null) continue;
                for (var i = before?.Anomalies.Count ?? 0; i < after.Anomalies.Count; i++)
                {
                    var anomaly = after.Anomalies[i];
                    var payload = new WebhookPayload("", WebhookKinds.AnomalyFlagged, after.Id, after.Status.Wire(), anomaly.Detail, anomaly.Kind, anomaly.At);
                    foreach (var s in subscriptions.Where(s => s.FromSequence < firstSequence && s.Wants(WebhookKinds.AnomalyFlagged, anomaly.Kind)))
                    {
                        candidates.Add((s, payload with { DeliveryId = WebhookDelivery.IdFor(s.Id, $"anomaly:{after.Id}#{i}") }));
                    }
                }
            }
            span?.SetTag("ledger.events.read", read);
        }
        if (candidates.Count == 0) return;

        // A page replayed after a crash before its commit: nothing of it was committed. A page
        // replayed otherwise (a rebuild, an anomaly seen twice): its deliveries are logged already.
        var ids = candidates.Select(c => c.Payload.DeliveryId).Distinct().ToArray();
        var logged = (await operations.LoadManyAsync<WebhookDelivery>(cancellationToken, ids)).Select(d => d.Id).ToHashSet();
        var now = DateTimeOffset.UtcNow;
        foreach (var (subscription, payload) in candidates)
        {
            if (!logged.Add(payload.DeliveryId)) continue;
            operations.Insert(new WebhookDelivery
            {
                Id = payload.DeliveryId,
                SubscriptionId = subscription.Id,
                Kind = payload.Kind,
                RunId = payload.RunId,
                AnomalyKind = payload.AnomalyKind,
                OccurredAt = payload.OccurredAt,
                CreatedAt = now,
            });
            var body = JsonSerializer.Serialize(payload, PayloadJson);
            await bus.PublishAsync(new DeliverWebhook(payload.DeliveryId, subscription.Id, body));
        }
    }

    /// <summary>
    /// The run before the first of the page's events of it and after the last, and how many events were
    /// read from storage to get them: the state before comes from the history's refold, which starts
    /// at the nearest snapshot (at most <see cref="HistoryOptions.SnapshotEvery"/> events back, stored by
    /// such reads as they pass), and the state after is that one with the page's own events folded on.
    /// The stream is never read whole: a run of 100,000 events costs a page what a run of 300 does.
    /// </summary>
    internal async Task<(Run? Before, Run? After, long Read)> AroundAsync(string runId, IReadOnlyList<IEvent> events, CancellationToken ct)
    {
        var first = events[0].Version;
        var last = events[^1].Version;
        await using var reading = await History.OpenAsync(runId, last, null, ct);
        var contiguous = events.Select((e, i) => e.Version == first + i).All(x => x);
        if (!contiguous)
        {
            // Not every event of the range is in the page (it never happens with one writer per stream): read both states.
            var whole = await History.StateAsync(reading, last, null, ct);
            await using var earlier = await History.OpenAsync(runId, first - 1, null, ct);
            var then = first > 1 ? await History.StateAsync(earlier, first - 1, null, ct) : new RunHistoryReader.Folded(null, null);
            return (then.Run, whole.Run, Folded(reading, last) + Folded(earlier, first - 1));
        }
        RunReplay.Fold fold;
        long read = 0;
        if (first > 1)
        {
            var before = await History.StateAsync(reading, first - 1, null, ct);
            if (before.Run is null) return (null, null, 0);
            read = Folded(reading, first - 1);
            fold = new RunReplay.Fold(new RunSnapshot(before.Last!.Value.Version, before.Last.Value.Sequence, before.Last.Value.RecordedAt, before.Run));
        }
        else
        {
            fold = new RunReplay.Fold();
        }
        var beforeState = fold.Run?.Clone();
        foreach (var e in events) fold.Apply(new StoredEvent(e.Version, e.Sequence, e.Timestamp, e.Data), explain: false);
        return (beforeState, fold.Run, read);
    }

    /// <summary>How many events a refold up to <paramref name="version"/> reads: those after the nearest snapshot.</summary>
    private static long Folded(RunHistoryReader.Reading reading, long version) =>
        version - (reading.Snapshots.Nearest is { } s && s.Version <= version ? s.Version : 0);

    /// <summary>The run notices an event carries, each with a source id unique to it (the event's sequence and the kind).</summary>
    private static IEnumerable<(string Source, WebhookPayload Payload)> RunNotices(IEvent e)
    {
        switch (e.Data)
        {
            case VerdictReached v when KindOf(v.Status) is { } kind:
                yield return ($"event:{e.Sequence}:{kind}", new WebhookPayload("", kind, v.RunId, v.Status.Wire(), v.Reason, null, v.At));
                break;
            case RunReclassified r:
                yield return ($"event:{e.Sequence}:{WebhookKinds.RunReclassified}",
                    new WebhookPayload("", WebhookKinds.RunReclassified, e.StreamKey, r.To.Wire(), r.Reason, null, r.At));
                break;
        }
    }

    private static string? KindOf(RunStatus status) => status switch
    {
        RunStatus.Succeeded => WebhookKinds.RunSucceeded,
        RunStatus.Failed => WebhookKinds.RunFailed,
        RunStatus.Lost => WebhookKinds.RunLost,
        RunStatus.Cancelled => WebhookKinds.RunCancelled,
        _ => null,
    };
}
