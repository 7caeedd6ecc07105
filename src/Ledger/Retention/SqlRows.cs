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

internal static class SqlRowsExtensions
{
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
