using JasperFx.Events.Daemon;
using Marten;

namespace Ledger.Infrastructure;

public enum ProjectionDaemonMode
{
    /// <summary>
    /// One instance among all sharing the database runs the async projections: Marten's HotCold
    /// daemon, elected by a PostgreSQL advisory lock, with failover to another instance.
    /// </summary>
    Leader,
    /// <summary>This instance runs them unconditionally: only for a single-instance deployment.</summary>
    Solo,
    /// <summary>This instance never runs them.</summary>
    Disabled,
}

/// <summary>The database the store uses, as resolved at startup.</summary>
public sealed record LedgerDatabase(string ConnectionString);

/// <summary>
/// The async daemon's timing (<c>Ledger:Projections:*</c>), handed to Marten's
/// <c>options.Projections</c>. See docs/operations.md, "Running several nodes" for why these values.
/// </summary>
public sealed class ProjectionDaemonOptions
{
    /// <summary>
    /// How often an instance that does not lead tries to take the leadership lock (Marten's
    /// <c>LeadershipPollingTime</c>). Bounds the takeover after the leader dies: the lock is freed
    /// as soon as PostgreSQL sees the leader's connection close.
    /// </summary>
    public int LeadershipPollingMilliseconds { get; set; } = 2_000;
    /// <summary>
    /// How often the leader checks its own projection agents and restarts any that stopped
    /// (Marten's <c>HealthCheckPollingTime</c>). Local to the leader: never moves the leadership.
    /// </summary>
    public int HealthCheckPollingMilliseconds { get; set; } = 5_000;
    /// <summary>
    /// How long a gap in the event sequence (a number reserved by a transaction that never
    /// committed) holds the projections back before they skip past it (Marten's
    /// <c>StaleSequenceThreshold</c>).
    /// </summary>
    public int StaleSequenceThresholdMilliseconds { get; set; } = 3_000;
    /// <summary>
    /// A new verdict wakes the projection leader (a PostgreSQL NOTIFY in the verdict's transaction,
    /// which the leader LISTENs for: <see cref="Ledger.Leaderboards.VerdictWakeup"/>) instead of
    /// waiting for its next poll, which is up to <see cref="IdlePollingMilliseconds"/> away even
    /// under load. Polling stays on as the safety net.
    /// </summary>
    public bool WakeOnVerdict { get; set; } = true;
    /// <summary>The least time between two wakes: a burst of verdicts makes one poll per interval, not one each.</summary>
    public int WakeIntervalMilliseconds { get; set; } = 100;
    /// <summary>
    /// How often the leader looks for new events once the projections have caught up (Marten's
    /// <c>SlowPollingTime</c>, library default 1 s), and also after a poll that found new events
    /// without a gap. With <see cref="WakeOnVerdict"/> verdicts do not wait for it.
    /// </summary>
    public int IdlePollingMilliseconds { get; set; } = 1_000;

    internal void ApplyTo(StoreOptions store, string schema)
    {
        var daemon = store.Projections;
        daemon.LeadershipPollingTime = LeadershipPollingMilliseconds;
        daemon.HealthCheckPollingTime = TimeSpan.FromMilliseconds(HealthCheckPollingMilliseconds);
        daemon.StaleSequenceThreshold = TimeSpan.FromMilliseconds(StaleSequenceThresholdMilliseconds);
        daemon.SlowPollingTime = TimeSpan.FromMilliseconds(IdlePollingMilliseconds);
        // Instances sharing a schema share one election; two ledgers in different schemas of one
        // database do not block each other.
        daemon.DaemonLockId = LockId(schema);
    }

    internal static DaemonMode MartenMode(ProjectionDaemonMode mode) => mode switch
    {
        ProjectionDaemonMode.Leader => DaemonMode.HotCold,
        ProjectionDaemonMode.Solo => DaemonMode.Solo,
        _ => DaemonMode.Disabled,
    };

    // Stable across processes and builds (string.GetHashCode is not).
    private static int LockId(string schema)
    {
        var hash = System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes("run-ledger-projections:" + schema));
        return BitConverter.ToInt32(hash, 0) & 0x7fffffff;
    }
}
