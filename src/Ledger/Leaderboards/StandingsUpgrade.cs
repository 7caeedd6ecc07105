using Ledger.Infrastructure;
using Marten;
using Marten.Schema;

namespace Ledger.Leaderboards;

/// <summary>
/// A database written before the standings projection kept its board tables has standing
/// documents but no <c>ledger_standings</c> rows (every folded standing has one now, ranked or
/// not). Then the projection is started again from the first event: its documents and its
/// position are cleared in one transaction, before the daemon starts, and the daemon refolds every
/// verdict into documents and tables alike. Runs once per database; a no-op on a new one.
/// (Upgrade every node: an old node leading the daemon during the upgrade would keep its position.)
/// Changes written before <c>superseded_at</c> existed get it filled at each start, which boards as
/// of a time need; a no-op once every change has it.
/// </summary>
public sealed class StandingsUpgrade(ILogger<StandingsUpgrade> logger) : IInitialData
{
    public async Task Populate(IDocumentStore store, CancellationToken cancellation)
    {
        var names = new StorageNames(store);
        await using var session = store.LightweightSession();
        var needed = await session.QueryAsync<bool>(
            $"select not exists (select 1 from {names.Own(StandingsProjection.CurrentTable)}) and exists (select 1 from {names.Table<Standing>()})",
            cancellation);
        if (!needed[0])
        {
            session.QueueSqlCommand(StandingsProjection.BackfillSupersededSql(names));
            await session.SaveChangesAsync(cancellation);
            return;
        }

        session.QueueSqlCommand($"delete from {names.Table<Standing>()}");
        session.QueueSqlCommand($"delete from {names.Own(StandingsProjection.ChangesTable)}");
        session.QueueSqlCommand($"delete from {names.Progression} where name like ?", StandingsProjection.Name + ":%");
        await session.SaveChangesAsync(cancellation);
        logger.LogWarning("Standings were written before the board tables existed: the standings projection starts again from the first event to fill them");
    }
}
