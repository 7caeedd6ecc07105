using JasperFx.Events.Projections;
using Marten;

namespace Ledger.Runs;

public static class RunsConfiguration
{
    /// <summary>The run stream, its inline summary (consistent with every write) and the lease index.</summary>
    public static StoreOptions AddRuns(this StoreOptions options)
    {
        options.Projections.Snapshot<Run>(SnapshotLifecycle.Inline);
        options.Projections.Add<LeaseHolderProjection>(ProjectionLifecycle.Inline);
        options.Schema.For<Run>()
            .Index(r => r.Status)
            .Index(r => r.Board)
            .Index(r => r.Batch)
            .Index(r => r.LeaseExpiresAt)
            // The console's and the API's filters: stuck runs (no heartbeat since) and time ranges are index lookups.
            .Index(r => r.LastHeartbeatAt)
            .Index(r => r.RegisteredAt)
            .Index(r => r.TerminalAt);
        options.Schema.For<LeaseHolder>();
        options.Storage.ExtendedSchemaObjects.Add(RecordedKeyStore.Table(options.DatabaseSchemaName));
        options.Storage.ExtendedSchemaObjects.Add(RunLocks.Function(options.DatabaseSchemaName));
        options.Storage.ExtendedSchemaObjects.Add(RunSnapshotStore.Table(options.DatabaseSchemaName));

        options.Events.AddEventTypes([
            typeof(RunRegistered), typeof(RunClaimed), typeof(RunCancelled), typeof(RunStarted), typeof(StepStarted),
            typeof(StepCompleted), typeof(HeartbeatReceived), typeof(LogWritten), typeof(ScoresReported),
            typeof(OutputRecorded), typeof(ItemsCommitted), typeof(RunCompleted), typeof(RunFailed),
            typeof(LeaseExpired), typeof(RunReclassified), typeof(VerdictReached), typeof(StatusObserved),
        ]);
        return options;
    }
}
