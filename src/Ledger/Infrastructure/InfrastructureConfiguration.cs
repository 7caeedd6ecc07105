namespace Ledger.Infrastructure;

public static class InfrastructureConfiguration
{
    /// <summary>
    /// What every slice leans on: the clock, the check of keys and the write endpoints' gate, the
    /// database as resolved at start (and a read pool of its own beside the store), and the names
    /// raw SQL takes from the store's mapping.
    /// </summary>
    public static IServiceCollection AddLedgerInfrastructure(this IServiceCollection services, string connectionString) =>
        services.AddSingleton(TimeProvider.System)
            .AddSingleton<Access>()
            .AddSingleton<RequestGate>()
            .AddSingleton(new LedgerDatabase(connectionString))
            .AddSingleton<ReadDatabase>()
            .AddSingleton<StorageNames>();
}
