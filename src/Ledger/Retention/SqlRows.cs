using System.Data.Common;
using System.Text;
using Marten;
using Marten.Internal;
using Marten.Linq.QueryHandlers;
using Weasel.Postgresql;
using Weasel.Storage;

namespace Ledger.Retention;

/// <summary>
/// A raw statement read row by row, inside the session's own connection and transaction (a
/// batch query), for the few reads of retention that no Marten query expresses. <c>?</c> marks
/// each parameter, in order.
/// </summary>
internal sealed class SqlRows<T>(string sql, object[] parameters, Func<DbDataReader, T> read) : IQueryHandler<IReadOnlyList<T>>
{
    public void ConfigureCommand(ICommandBuilder builder, IStorageSession session)
    {
        var parts = sql.Split('?');
        if (parts.Length - 1 != parameters.Length) throw new ArgumentException($"The statement has {parts.Length - 1} placeholders for {parameters.Length} parameters.");
        for (var i = 0; i < parts.Length; i++)
        {
            builder.Append(parts[i]);
            if (i < parameters.Length) builder.AppendParameter(parameters[i]);
        }
    }

    public async Task<IReadOnlyList<T>> HandleAsync(DbDataReader reader, IStorageSession session, CancellationToken token)
    {
        var rows = new List<T>();
        while (await reader.ReadAsync(token)) rows.Add(read(reader));
        return rows;
    }

    public Task<int> StreamJson(Stream stream, DbDataReader reader, CancellationToken token) => throw new NotSupportedException();
}

/// <summary>A raw statement whose rows are handed to a callback as they are read, none kept.</summary>
internal sealed class SqlEach(string sql, object[] parameters, Action<DbDataReader> each) : IQueryHandler<long>
{
    public void ConfigureCommand(ICommandBuilder builder, IStorageSession session) =>
        new SqlRows<int>(sql, parameters, _ => 0).ConfigureCommand(builder, session);

    public async Task<long> HandleAsync(DbDataReader reader, IStorageSession session, CancellationToken token)
    {
        long rows = 0;
        while (await reader.ReadAsync(token))
        {
            each(reader);
            rows++;
        }
        return rows;
    }

    public Task<int> StreamJson(Stream stream, DbDataReader reader, CancellationToken token) => throw new NotSupportedException();
}

internal static class SqlRowsExtensions
{
    /// <summary>Runs one raw statement in the session and hands each row to <paramref name="each"/> as it is read.</summary>
    public static async Task<long> EachAsync(this IQuerySession session, string sql, Action<DbDataReader> each, CancellationToken ct, params object[] parameters)
    {
        var batch = session.CreateBatchQuery();
        var rows = batch.AddItem(new SqlEach(sql, parameters, each));
        await batch.Execute(ct);
        return await rows;
    }

    /// <summary>Runs one raw statement in the session (its transaction, when it has one) and reads every row.</summary>
    public static async Task<IReadOnlyList<T>> RowsAsync<T>(this IQuerySession session, string sql, Func<DbDataReader, T> read, CancellationToken ct,
        params object[] parameters)
    {
        var batch = session.CreateBatchQuery();
        var rows = batch.AddItem(new SqlRows<T>(sql, parameters, read));
        await batch.Execute(ct);
        return await rows;
    }
}
