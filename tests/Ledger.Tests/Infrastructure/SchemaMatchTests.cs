using Ledger.Tests.Fixtures;
using Marten;
using Microsoft.Extensions.DependencyInjection;

namespace Ledger.Tests.Infrastructure;

/// <summary>
/// Once the service has started, the database is exactly what the store configures: every node
/// that starts next finds nothing to change (a function written otherwise than PostgreSQL prints
/// it back would be replaced at every start, by every node at once).
/// </summary>
public sealed class SchemaMatchTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    [Fact]
    public async Task after_a_start_the_database_matches_the_configured_schema()
    {
        var store = ledger.Host.Services.GetRequiredService<IDocumentStore>();
        var migration = await store.Storage.Database.CreateMigrationAsync();
        var changes = migration.Deltas.Where(d => d.Difference != Weasel.Core.SchemaPatchDifference.None)
            .Select(d => $"{d.SchemaObject.Identifier}: {d.Difference}").ToList();
        Assert.True(changes.Count == 0, $"left to change: {string.Join(", ", changes)}");
    }
}
