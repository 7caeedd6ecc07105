using System.Data.Common;
using JasperFx.Events;
using Ledger.Infrastructure;
using Npgsql;
using Weasel.Core;
using Weasel.Storage;
using Weasel.Postgresql.Functions;

namespace Ledger.Runs;

/// <summary>
/// The guard of a group whose runs the writer already holds: one statement, the first of the
/// group's transaction, that locks the runs' stream rows one primary-key probe at a time, in
/// run-id order (ordinal, the order every writer takes them in, so nodes queue rather than
/// deadlock), and fails the transaction with <c>serialization_failure</c> when any of them is not
/// at the version the writer decided on.
/// It runs before Marten's appends, so a refused group never drew numbers from the event
/// sequence: no gap is left for the async daemon to wait on.
/// </summary>
public static class RunLocks
{
    public const string FunctionName = "ledger_lock_runs";

    /// <summary>The function, created with the schema (written as PostgreSQL prints it back, so the schema check finds no change).</summary>
    public static Function Function(StorageNames names) => new(new Weasel.Postgresql.PostgresqlObjectName(names.Schema, FunctionName, Weasel.Postgresql.SchemaUtils.IdentifierUsage.General), $"""
        CREATE OR REPLACE FUNCTION {names.Function(FunctionName)}(ids character varying[], versions bigint[])
         RETURNS void
         LANGUAGE plpgsql
        AS $function$
        declare
            i integer;
            stored bigint;
        begin
            for i in 1 .. coalesce(array_length(ids, 1), 0) loop
                select version into stored from {names.Streams} where id = ids[i] for update;
                if stored is distinct from versions[i] then
                    raise exception 'run % changed since this node decided on it', ids[i] using errcode = 'serialization_failure';
                end if;
            end loop;
        end;
        $function$;
        """);

    /// <summary>
    /// Locks and checks the runs as the first statement of the session's transaction: Marten puts
    /// operations on events ahead of every other one, and this one is queued before the appends.
    /// </summary>
    public static void Queue(Marten.IDocumentSession session, string schema, IReadOnlyList<(string RunId, long Version)> runs)
    {
        if (runs.Count == 0) return;
        var sorted = runs.OrderBy(r => r.RunId, StringComparer.Ordinal).ToList();
        session.QueueOperation(new EventOrderedSql(
            $"select {StorageNames.Qualified(schema, FunctionName)}(?::varchar[], ?::bigint[])",
            sorted.Select(r => r.RunId).ToArray(), sorted.Select(r => r.Version).ToArray()));
    }
}

/// <summary>
/// A SQL statement Marten runs among the event operations, ahead of the appends and the
/// documents (its document type is <see cref="IEvent"/>). '?' marks each parameter, in order.
/// A query (<c>select</c>) returns a result Marten steps over; a command that returns nothing is
/// an <see cref="EventOrderedCommand"/>.
/// </summary>
internal class EventOrderedSql(string sql, params object[] parameters) : Weasel.Storage.IStorageOperation
{
    public void ConfigureCommand(ICommandBuilder builder, IStorageSession session)
    {
        var parts = sql.Split('?');
        if (parts.Length != parameters.Length + 1) throw new InvalidOperationException($"{parameters.Length} parameters for '{sql}'");
        builder.Append(parts[0]);
        for (var i = 0; i < parameters.Length; i++)
        {
            builder.AppendParameter(parameters[i]);
            builder.Append(parts[i + 1]);
        }
    }

    public Type DocumentType => typeof(IEvent);

    public Task PostprocessAsync(DbDataReader reader, IList<Exception> exceptions, CancellationToken token) => Task.CompletedTask;

    public OperationRole Role() => OperationRole.Other;
}

/// <summary>An <see cref="EventOrderedSql"/> that returns no rows (an insert).</summary>
internal sealed class EventOrderedCommand(string sql, params object[] parameters) : EventOrderedSql(sql, parameters), NoDataReturnedCall;
