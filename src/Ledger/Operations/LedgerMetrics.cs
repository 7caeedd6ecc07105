using System.Diagnostics;
using System.Diagnostics.Metrics;
using Ledger.Contract;
using Ledger.Runs;

namespace Ledger.Operations;

/// <summary>
/// The ledger's own instruments, on one meter (<see cref="MeterName"/>), beside those of ASP.NET Core,
/// Npgsql, the runtime, Marten and Wolverine. Label values are the wire strings (event types, results,
/// problem codes, statuses, anomaly kinds). The meter comes from the host's <see cref="IMeterFactory"/>,
/// so each host (and each test host) has instruments of its own. The list, with what each means, is in
/// docs/operations.md.
/// </summary>
public sealed class LedgerMetrics
{
    public const string MeterName = "RunLedger";

    private readonly Counter<long> _events;
    private readonly Counter<long> _refusals;
    private readonly Counter<long> _anomalies;
    private readonly Histogram<int> _groupSize;
    private readonly Histogram<double> _commitDuration;
    private readonly Counter<long> _archivedRuns;
    private readonly Counter<long> _retentionFailures;

    public LedgerMetrics(IMeterFactory meters, StoredStateGauges stored, IServiceProvider services)
    {
        var meter = meters.Create(MeterName);
        _events = meter.CreateCounter<long>("ledger_events", description:
            "Worker events answered by the run writer, by wire type and result (applied, duplicate, recorded-not-applied, refused).");
        _refusals = meter.CreateCounter<long>("ledger_refusals", description:
            "Answers that were problem details, by problem code (the refusal catalogue), unauthenticated 401s included.");
        _anomalies = meter.CreateCounter<long>("ledger_anomalies", description: "Anomalies recorded, by kind.");
        _groupSize = meter.CreateHistogram<int>("ledger_writer_group_size", unit: "{command}",
            description: "Commands decided and committed in one transaction by the run writer.",
            advice: new InstrumentAdvice<int> { HistogramBucketBoundaries = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024] });
        _commitDuration = meter.CreateHistogram<double>("ledger_writer_commit_duration", unit: "s",
            description: "Time of the run writer's commit (SaveChanges: the statements and COMMIT) of one group.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5] });
        _archivedRuns = meter.CreateCounter<long>("ledger_retention_archived_runs", unit: "{run}",
            description: "Runs archived by retention sweeps of this process (a late event archived later counts again).");
        _retentionFailures = meter.CreateCounter<long>("ledger_retention_failures", unit: "{run}",
            description: "Runs a retention sweep of this process failed to archive, by reason (directory-unwritable, disk-full, read-back-mismatch, ...).");
        // The writer is resolved when observed, not here: it depends on these metrics.
        meter.CreateObservableGauge("ledger_writer_queue_depth",
            () => services.GetService<RunWriter>()?.Queued ?? 0, unit: "{command}",
            description: "Commands waiting for the run writer in this process.");
        meter.CreateObservableGauge("ledger_runs", stored.RunsByStatus, unit: "{run}",
            description: "Runs by status, counted over the stored run documents (the same on every node: aggregate with max).");
        meter.CreateObservableGauge("ledger_webhook_subscriptions", stored.SubscriptionsByState, unit: "{subscription}",
            description: "Webhook subscriptions by state (active, failing, paused), from the stored subscriptions (the same on every node).");
        meter.CreateObservableGauge("ledger_projection_lag", stored.ProjectionLag, unit: "{event}",
            description: "Events the async projections have yet to process: the event store's high water mark minus each projection's progression.");
    }

    /// <summary>What the writer answered to one command: each worker event of a RecordEventsCommand, by type and result.</summary>
    public void Answered(RunCommand command, Decision decision)
    {
        if (command is not RecordEventsCommand record) return;
        var results = decision.Results;
        for (var i = 0; i < record.Events.Count; i++)
        {
            var result = results is not null && i < results.Count ? Wire(results[i].Result) : "refused";
            _events.Add(1, new TagList { { "type", EventNames.WireName(record.Events[i]) }, { "result", result } });
        }
    }

    public void Refused(string problemCode) => _refusals.Add(1, new KeyValuePair<string, object?>("problem", problemCode));

    public void Anomaly(string kind) => _anomalies.Add(1, new KeyValuePair<string, object?>("kind", kind));

    /// <summary>A writer group committed: its size, the commit's duration, and the anomalies it recorded.</summary>
    public void Committed(int commands, TimeSpan duration, IEnumerable<string> anomalyKinds)
    {
        _groupSize.Record(commands);
        _commitDuration.Record(duration.TotalSeconds);
        foreach (var kind in anomalyKinds) Anomaly(kind);
    }

    public void RetentionArchived() => _archivedRuns.Add(1);

    public void RetentionFailed(string reason) => _retentionFailures.Add(1, new KeyValuePair<string, object?>("reason", reason));

    public static string Wire(EventResultKind kind) => kind switch
    {
        EventResultKind.Applied => "applied",
        EventResultKind.Duplicate => "duplicate",
        EventResultKind.RecordedNotApplied => "recorded-not-applied",
        _ => "refused",
    };
}
