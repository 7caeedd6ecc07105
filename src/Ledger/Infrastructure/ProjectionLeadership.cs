using Marten;
using Microsoft.Extensions.Options;
using Npgsql;

namespace Ledger.Infrastructure;

public enum ProjectionDaemonMode
{
    /// <summary>One instance among all sharing the database runs the async projections (advisory-lock election).</summary>
    Leader,
    /// <summary>This instance runs them unconditionally: only for a single-instance deployment.</summary>
    Solo,
    /// <summary>This instance never runs them.</summary>
    Disabled,
}

/// <summary>The database the store uses, as resolved at startup.</summary>
public sealed record LedgerDatabase(string ConnectionString);

/// <summary>
/// Elects one instance to run the async projections by holding a PostgreSQL session advisory
/// lock on a dedicated connection; when that connection dies the lock is released and another
/// instance takes over. (Written when Marten's HotCold election needed a DistributedLock build
/// that was not served; Patched.DistributedLock.Postgres now is, so replacing this with Marten's
/// or Wolverine's own distribution is the operations issue's to try.)
/// </summary>
public sealed class ProjectionLeadership(IDocumentStore store, LedgerDatabase database, IOptions<LedgerOptions> options,
    ILogger<ProjectionLeadership> logger, ILoggerFactory loggers) : BackgroundService
{
    private static readonly TimeSpan Retry = TimeSpan.FromSeconds(5);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (options.Value.DaemonMode != ProjectionDaemonMode.Leader) return;
        var lockKey = LockKey(options.Value.SchemaName);

        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await using var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(database.ConnectionString)
                {
                    Pooling = false, // the lock lives exactly as long as this physical connection
                    KeepAlive = 10,
                }.ConnectionString);
                await connection.OpenAsync(stoppingToken);
                if (!await TryLock(connection, lockKey, stoppingToken))
                {
                    await Task.Delay(Retry, stoppingToken);
                    continue;
                }

                logger.LogInformation("This instance leads the async projections (leaderboard standings)");
                // The daemon logs each processed range: under Marten's category, which is configured to warnings.
                var daemon = await store.BuildProjectionDaemonAsync(logger: loggers.CreateLogger("Marten.Daemon"));
                await daemon.StartAllAsync();
                try
                {
                    while (!stoppingToken.IsCancellationRequested)
                    {
                        await Task.Delay(Retry, stoppingToken);
                        await using var ping = new NpgsqlCommand("select 1", connection);
                        await ping.ExecuteScalarAsync(stoppingToken);
                    }
                }
                finally
                {
                    await daemon.StopAllAsync();
                    logger.LogInformation("This instance no longer leads the async projections");
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                logger.LogWarning(e, "Projection leadership lost or unavailable; retrying in {Seconds}s", Retry.TotalSeconds);
                await Task.Delay(Retry, stoppingToken).ContinueWith(_ => { }, CancellationToken.None);
            }
        }
    }

    private static async Task<bool> TryLock(NpgsqlConnection connection, long key, CancellationToken ct)
    {
        await using var command = new NpgsqlCommand("select pg_try_advisory_lock(@key)", connection);
        command.Parameters.AddWithValue("key", key);
        return (bool)(await command.ExecuteScalarAsync(ct))!;
    }

    // Stable across processes: instances sharing a schema share the election.
    private static long LockKey(string schema)
    {
        var hash = System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes("run-ledger-projections:" + schema));
        return BitConverter.ToInt64(hash, 0);
    }
}
