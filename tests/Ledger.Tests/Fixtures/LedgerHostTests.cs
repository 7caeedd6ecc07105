using Ledger.Infrastructure;
using Microsoft.Extensions.DependencyInjection;

namespace Ledger.Tests.Fixtures;

/// <summary>
/// The fixture itself: a host is configured by its own settings, read by Program.cs before
/// <c>builder.Build()</c>, so that classes started in parallel never see each other's database.
/// </summary>
public sealed class LedgerHostTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    [Fact]
    public void the_service_uses_the_database_of_its_own_host()
    {
        // LedgerDatabase is built from the connection string Program.cs resolved before Build() (its statement preparation merged in).
        Assert.Equal(ConnectionSettings.WithStatementCaching(ledger.ConnectionString), ledger.Host.Services.GetRequiredService<LedgerDatabase>().ConnectionString);
        Assert.Null(ledger.Host.Services.GetService<EmbeddedPostgres>());
    }

    [Fact]
    public async Task a_second_instance_shares_the_database_and_the_clock()
    {
        await using var second = await ledger.SecondInstance();
        Assert.Equal(ConnectionSettings.WithStatementCaching(ledger.ConnectionString), second.Services.GetRequiredService<LedgerDatabase>().ConnectionString);
        Assert.Same(ledger.Clock, second.Services.GetRequiredService<TimeProvider>());
    }
}
