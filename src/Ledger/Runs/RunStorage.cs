using Ledger.Infrastructure;
using Marten;

namespace Ledger.Runs;

/// <summary>
/// The storage of the run summaries (<c>mt_doc_run</c>). Every event rewrites its run's row; with
/// no index on an expression of the document (RunsConfiguration) and free room in the row's page,
/// PostgreSQL writes the new version beside the old one without touching any index (a HOT update).
/// The room is the table's fillfactor: pages are filled to <see cref="FillFactor"/> percent. It
/// applies to pages written from then on, so a database written before fills in as runs are written.
/// </summary>
public static class RunStorage
{
    /// <summary>Percent of each page filled by inserts; the rest is left for the new versions of its rows.</summary>
    public const int FillFactor = 80;

    public static async Task LeaveRoomForUpdatesAsync(IDocumentStore store, ILogger logger, CancellationToken ct)
    {
        var table = new StorageNames(store).Table<Run>();
        await using var session = store.LightweightSession();
        var options = await session.QueryAsync<string>(
            "select coalesce(array_to_string(reloptions, ','), '') from pg_class where oid = ?::regclass", ct, table);
        if (options.Count == 0 || options[0].Split(',').Contains($"fillfactor={FillFactor}")) return;
        session.QueueSqlCommand($"alter table {table} set (fillfactor = {FillFactor})");
        await session.SaveChangesAsync(ct);
        logger.LogInformation("Run summaries ({Table}) now leave {Room} % of each page for updates (fillfactor {FillFactor})",
            table, 100 - FillFactor, FillFactor);
    }
}
