using Alba;
using JasperFx.CommandLine;
using Ledger.Infrastructure;
using Ledger.Runs;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Time.Testing;
using Marten.Events;
using Npgsql;

namespace Ledger.Tests.Fixtures;

/// <summary>
/// One ledger host per test run, on a real PostgreSQL: the server given by
/// LEDGER_TEST_CONNECTION, or a private cluster started by the same mechanism the service uses.
/// Each test run gets a database of its own, dropped at the end.
/// </summary>
public sealed class LedgerHost : IAsyncLifetime
{
    public const string AdminKey = "test-admin-key";
    public const string WorkerKey = "test-worker-key";
    public const string ReadKey = "test-read-key";

    private string? _database;
    private string? _serverConnectionString;

    public IAlbaHost Host { get; private set; } = null!;
    public FakeTimeProvider Clock { get; } = new(DateTimeOffset.UtcNow) { AutoAdvanceAmount = TimeSpan.FromMilliseconds(1) };
    public string ConnectionString { get; private set; } = "";

    /// <summary>Waits until the async projections (standings) have caught up with every event.</summary>
    public Task Settled() => Host.Services.GetRequiredService<Marten.IDocumentStore>()
        .WaitForNonStaleProjectionDataAsync(TimeSpan.FromSeconds(30));

    /// <summary>Verify, once the async projections have caught up (a lagging standing is not a difference).</summary>
    public async Task<Ledger.Forensics.VerifyReport> Verify()
    {
        await Settled();
        return await Host.Services.GetRequiredService<Ledger.Forensics.ProjectionVerifier>().VerifyAsync(CancellationToken.None);
    }

    public Task<Janitor.SweepResult> Sweep() => Host.Services.GetRequiredService<Janitor>().SweepAsync(CancellationToken.None);

    public async Task InitializeAsync()
    {
        (_serverConnectionString, ConnectionString, _database) = TestDatabase.Create();

        Environment.SetEnvironmentVariable("ConnectionStrings__Ledger", ConnectionString);
        Environment.SetEnvironmentVariable("Ledger__AdminKey", AdminKey);
        Environment.SetEnvironmentVariable("Ledger__WorkerKeys__0", WorkerKey);
        Environment.SetEnvironmentVariable("Ledger__ReadKeys__0", ReadKey);
        Environment.SetEnvironmentVariable("Ledger__MaxPayloadBytes", (256 * 1024).ToString());
        // Tests sweep explicitly (Janitor.SweepAsync) so that time, not a timer, decides.
        Environment.SetEnvironmentVariable("Ledger__Janitor__Enabled", "false");
        Environment.SetEnvironmentVariable("Ledger__Janitor__GraceSeconds", "10");
        Environment.SetEnvironmentVariable("Ledger__DaemonMode", "Leader");

        JasperFxEnvironment.AutoStartHost = true;
        Host = await AlbaHost.For<Program>(web => web.ConfigureServices(services =>
        {
            services.RemoveAll<TimeProvider>();
            services.AddSingleton<TimeProvider>(Clock);
        }));
    }

    /// <summary>A second ledger instance on the same database and clock, as a second replica would be.</summary>
    public Task<IAlbaHost> SecondInstance()
    {
        JasperFxEnvironment.AutoStartHost = true;
        return AlbaHost.For<Program>(web => web.ConfigureServices(services =>
        {
            services.RemoveAll<TimeProvider>();
            services.AddSingleton<TimeProvider>(Clock);
        }));
    }

    public async Task DisposeAsync()
    {
        await Host.DisposeAsync();
        NpgsqlConnection.ClearAllPools();
        TestDatabase.Drop(_serverConnectionString!, _database!);
    }
}

public static class TestDatabase
{
    /// <summary>A fresh database on the test server: (server connection, database connection, name).</summary>
    public static (string Server, string Database, string Name) Create()
    {
        var server = Environment.GetEnvironmentVariable("LEDGER_TEST_CONNECTION");
        if (string.IsNullOrWhiteSpace(server))
        {
            var embedded = new EmbeddedPostgres(new EmbeddedPostgresOptions
            {
                DataDirectory = Path.Combine("/var/tmp", "run-ledger", "test-postgres"),
                Port = 54339,
            }, _ => { });
            embedded.Start();
            server = embedded.ServerConnectionString();
        }

        var name = $"ledger_test_{DateTime.UtcNow:yyyyMMddHHmmss}_{Guid.NewGuid().ToString("N")[..8]}";
        using (var conn = new NpgsqlConnection(server))
        {
            conn.Open();
            using var create = new NpgsqlCommand($"create database \"{name}\"", conn);
            create.ExecuteNonQuery();
        }
        var database = new NpgsqlConnectionStringBuilder(server) { Database = name, MaxPoolSize = 50 }.ConnectionString;
        return (server, database, name);
    }

    public static void Drop(string server, string name)
    {
        try
        {
            using var conn = new NpgsqlConnection(server);
            conn.Open();
            using var drop = new NpgsqlCommand($"drop database if exists \"{name}\" with (force)", conn);
            drop.ExecuteNonQuery();
        }
        catch (NpgsqlException)
        {
            // A leftover test database harms nothing; the next run uses a new name.
        }
    }
}

[CollectionDefinition(Name)]
public sealed class LedgerCollection : ICollectionFixture<LedgerHost>
{
    public const string Name = "ledger";
}
