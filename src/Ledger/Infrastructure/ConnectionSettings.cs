using System.Data.Common;
using Npgsql;
using Polly;
using Polly.Retry;

namespace Ledger.Infrastructure;

/// <summary>
/// How the ledger's connections keep their statements. Npgsql resets a pooled connection each
/// time a session takes it; with no prepared statement on it, that reset is <c>DISCARD ALL</c>,
/// which also throws away every cached plan in that backend: the statements inside Marten's
/// <c>mt_quick_append_events</c>, the foreign-key checks and the ledger's own, so every group
/// planned them all again. With automatic preparation the connection keeps its prepared
/// statements, and Npgsql resets it without <c>DISCARD ALL</c> (it still releases advisory locks,
/// LISTENs, settings and temporary tables, so nothing else carries over between sessions).
/// </summary>
public static class ConnectionSettings
{
    /// <summary>Statements each connection keeps prepared (least recently used ones are replaced).</summary>
    public const int MaxAutoPrepare = 64;
    /// <summary>Executions of a statement before it is prepared: one-off statements are not.</summary>
    public const int AutoPrepareMinUsages = 2;

    /// <summary>
    /// The connection string with automatic preparation merged in. What the operator set wins:
    /// their own <c>Max Auto Prepare</c> (0 too, e.g. behind PgBouncer in transaction mode, which
    /// cannot keep prepared statements) or <c>Auto Prepare Min Usages</c> is left as it is.
    /// </summary>
    public static string WithStatementCaching(string connectionString)
    {
        var given = new DbConnectionStringBuilder { ConnectionString = connectionString };
        var keys = given.Keys.Cast<string>().Select(Normalize).ToHashSet(StringComparer.Ordinal);
        var merged = new NpgsqlConnectionStringBuilder(connectionString);
        if (!keys.Contains("maxautoprepare")) merged.MaxAutoPrepare = MaxAutoPrepare;
        if (!keys.Contains("autoprepareminusages")) merged.AutoPrepareMinUsages = AutoPrepareMinUsages;
        return merged.ConnectionString;

        static string Normalize(string key) => key.Replace(" ", "", StringComparison.Ordinal).ToLowerInvariant();
    }

    /// <summary>The connection string as it can be shown (logs, reports): without its password.</summary>
    public static string WithoutPassword(string connectionString)
    {
        var builder = new NpgsqlConnectionStringBuilder(connectionString) { Password = null };
        return builder.ConnectionString;
    }

    /// <summary>
    /// A prepared statement the server no longer accepts as it was prepared: another node changed
    /// a table it reads (0A000 "cached plan must not change result type", raised while the server
    /// revalidates the plan), or the statement is gone from the backend (26000). Npgsql forgets
    /// the first kind at once, so running the statement again prepares it afresh.
    /// </summary>
    public static bool IsStalePreparedStatement(Exception e) => e switch
    {
        PostgresException { SqlState: PostgresErrorCodes.FeatureNotSupported, Routine: "RevalidateCachedQuery" } => true,
        PostgresException { SqlState: PostgresErrorCodes.InvalidSqlStatementName } => true,
        _ when e.InnerException is not null => IsStalePreparedStatement(e.InnerException),
        _ => false,
    };

    /// <summary>Runs a read again (up to twice) when it failed on a stale prepared statement.</summary>
    public static async Task<T> RetryStale<T>(Func<Task<T>> read)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await read();
            }
            catch (Exception e) when (attempt < 3 && IsStalePreparedStatement(e))
            {
                // Npgsql has dropped the statement: the next execution prepares it again.
            }
        }
    }

    /// <summary>The same retry for Marten's reads (its resilience pipeline; commits are left alone).</summary>
    public static ResiliencePipelineBuilder RetryStaleStatements(this ResiliencePipelineBuilder builder) =>
        builder.AddRetry(new RetryStrategyOptions
        {
            ShouldHandle = new PredicateBuilder().Handle<Exception>(IsStalePreparedStatement),
            MaxRetryAttempts = 2,
            Delay = TimeSpan.Zero,
        });
}
