using Npgsql;

namespace Ledger.Infrastructure;

/// <summary>A pooled data source for the few reads that are plain SQL aggregates over projections.</summary>
public sealed class ReadDatabase(LedgerDatabase database) : IAsyncDisposable
{
    public NpgsqlDataSource Source { get; } = NpgsqlDataSource.Create(database.ConnectionString);

    public ValueTask DisposeAsync() => Source.DisposeAsync();
}
