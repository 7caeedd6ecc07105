using System.Net.Sockets;
using JasperFx;
using JasperFx.Events;
using Npgsql;

namespace Ledger.Infrastructure;

public static class DatabaseFailures
{
    /// <summary>The database is unreachable or overloaded: the caller should retry later.</summary>
    public static bool IsTransient(Exception e) => e switch
    {
        NpgsqlException { IsTransient: true } => true,
        NpgsqlException { InnerException: SocketException or IOException or TimeoutException } => true,
        PostgresException p when p.SqlState.StartsWith("53", StringComparison.Ordinal) // insufficient resources
                                 || p.SqlState.StartsWith("57P", StringComparison.Ordinal) // shutdown
                                 || p.SqlState.StartsWith("08", StringComparison.Ordinal) => true, // connection
        SocketException or TimeoutException => true,
        // Another node's schema change invalidated a prepared statement: running it again succeeds.
        PostgresException when ConnectionSettings.IsStalePreparedStatement(e) => true,
        _ when e.InnerException is not null => IsTransient(e.InnerException),
        _ => false,
    };

    /// <summary>Another writer appended to the stream between our read and our write.</summary>
    public static bool IsConcurrency(Exception e) => e switch
    {
        ConcurrencyException or EventStreamUnexpectedMaxEventIdException => true,
        // Raised by Marten's append function when the stream moved past the expected version.
        PostgresException { SqlState: "MT003" } => true,
        // PostgreSQL broke a lock cycle between two writers of one run by aborting this one.
        PostgresException { SqlState: PostgresErrorCodes.DeadlockDetected or PostgresErrorCodes.SerializationFailure } => true,
        PostgresException { SqlState: PostgresErrorCodes.UniqueViolation } p
            when p.ConstraintName?.Contains("events", StringComparison.OrdinalIgnoreCase) == true => true,
        _ when e.InnerException is not null => IsConcurrency(e.InnerException),
        _ => false,
    };
}
