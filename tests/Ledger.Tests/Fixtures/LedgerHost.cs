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
/// One ledger host per test class (<c>IClassFixture&lt;LedgerHost&gt;</c>), on a real PostgreSQL:
/// the server given by LEDGER_TEST_CONNECTION, or a private cluster started once per test run
/// by the same mechanism the service uses. Each host gets a database of its own (dropped when
/// the class is done) and a clock of its own, so no class sees another's runs or time.
/// The service is configured per host, through host settings that Program.cs sees before
/// <c>builder.Build()</c> (they reach <c>WebApplication.CreateBuilder(args)</c> as command-line
/// arguments), never through process environment variables, which classes running in parallel
/// would overwrite for each other.
/// </summary>
public sealed class LedgerHost : IAsyncLifetime
{
    public const string AdminKey = "test-admin-key";
    public const string WorkerKey = "test-worker-key";
    public const string ReadKey = "test-read-key";

    private string? _database;
    private string? _serverConnectionString;
    private readonly IReadOnlyDictionary<string, string> _settings;
    private readonly Action<IServiceCollection>? _services;

    public LedgerHost() : this(new Dictionary<string, string>()) { }

    private LedgerHost(IReadOnlyDictionary<string, string> settings, Action<IServiceCollection>? services = null)
    {
        _settings = settings;
        _services = services;
    }

    /// <summary>
    /// A host of a test's own (its own database too) whose every instance starts with these
    /// settings on top of the class's; the test initializes and disposes it.
    /// </summary>
    public static LedgerHost With(IReadOnlyDictionary<string, string> settings, Action<IServiceCollection>? services = null) => new(settings, services);

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
        Host = await StartInstance();
    }

    /// <summary>
    /// A second ledger instance on the same database and clock, as a second replica would be;
    /// <paramref name="configure"/> may change its services (fault injection).
    /// </summary>
    public Task<IAlbaHost> SecondInstance(Action<IServiceCollection>? configure = null) => StartInstance(configure);

    /// <summary>
    /// Another instance on the same database and clock with some settings of its own (host
    /// settings, as the class's are: <c>Ledger:Writer:QueueCapacity</c>, <c>Logging:LogLevel:...</c>).
    /// </summary>
    public Task<IAlbaHost> SecondInstance(IReadOnlyDictionary<string, string> settings, Action<IServiceCollection>? configure = null) =>
        StartInstance(configure, settings: settings);

    /// <summary>An instance configured as this host is, on the clock of this host, but on another database (one a test owns).</summary>
    public Task<IAlbaHost> InstanceOn(string connectionString) => StartInstance(connectionString: connectionString);

    /// <summary>An instance on another database (one a test owns), with settings and services of its own on top of the class's.</summary>
    public Task<IAlbaHost> InstanceOn(string connectionString, IReadOnlyDictionary<string, string> settings, Action<IServiceCollection>? configure = null) =>
        StartInstance(configure, connectionString, settings);

    private Dictionary<string, string> Settings(string? connectionString = null) => new()
    {
        ["ConnectionStrings:Ledger"] = connectionString ?? ConnectionString,
        ["Ledger:AdminKey"] = AdminKey,
        ["Ledger:WorkerKeys:0"] = WorkerKey,
        ["Ledger:ReadKeys:0"] = ReadKey,
        ["Ledger:MaxPayloadBytes"] = (256 * 1024).ToString(),
        // Tests sweep explicitly (Janitor.SweepAsync) so that time, not a timer, decides.
        ["Ledger:Janitor:Enabled"] = "false",
        ["Ledger:Janitor:GraceSeconds"] = "10",
        ["Ledger:DaemonMode"] = "Leader",
        ["Ledger:Metrics:ScrapeCacheMilliseconds"] = "0",
        ["Ledger:Metrics:StoredStateCacheSeconds"] = "0",
        // A board read right after a settled verdict must show it (BoardPageCacheTests covers the cache).
        ["Ledger:Leaderboards:PageFreshnessMilliseconds"] = "0",
        // Every test request comes from one address (the test server's): classes send thousands of
        // wrong keys on purpose. The throttle is tested on instances of its own (WrongKeyThrottleTests).
        ["Ledger:WrongKeys:Limit"] = "0",
        // Webhook retries within seconds rather than an hour (WebhookTests).
        ["Ledger:Webhooks:MaxAttempts"] = "4",
        ["Ledger:Webhooks:RetryWindowSeconds"] = "3",
        ["Ledger:Webhooks:TimeoutSeconds"] = "30", // a slow 200 on a loaded machine is not a failed attempt (tests count attempts)
    };

    private Task<IAlbaHost> StartInstance(Action<IServiceCollection>? configure = null, string? connectionString = null,
        IReadOnlyDictionary<string, string>? settings = null)
    {
        JasperFxEnvironment.AutoStartHost = true;
        return AlbaHost.For<Program>(web =>
        {
            foreach (var (key, value) in Settings(connectionString)) web.UseSetting(key, value);
            foreach (var (key, value) in _settings) web.UseSetting(key, value);
            foreach (var (key, value) in settings ?? new Dictionary<string, string>()) web.UseSetting(key, value);
            web.ConfigureServices(services =>
            {
                services.RemoveAll<TimeProvider>();
                services.AddSingleton<TimeProvider>(Clock);
                _services?.Invoke(services);
                configure?.Invoke(services);
            });
        });
    }

    public async Task DisposeAsync()
    {
        if (Host is not null) await Host.DisposeAsync();
        if (_database is null) return;
        // Only this database's connections: other classes' hosts are still using theirs.
        NpgsqlConnection.ClearPool(new NpgsqlConnection(ConnectionString));
        TestDatabase.Drop(_serverConnectionString!, _database);
    }
}

public static class TestDatabase
{
    private static readonly object Gate = new();
    private static string? _server;
    private static EmbeddedPostgres? _embedded;

    /// <summary>A fresh database on the test server: (server connection, database connection, name).</summary>
    public static (string Server, string Database, string Name) Create()
    {
        var server = Server();
        var name = $"ledger_test_{DateTime.UtcNow:yyyyMMddHHmmss}_{Guid.NewGuid().ToString("N")[..8]}";
        using (var conn = new NpgsqlConnection(server))
        {
            conn.Open();
            using var create = new NpgsqlCommand($"create database \"{name}\"", conn);
            create.ExecuteNonQuery();
        }
        // Classes run in parallel, each with its own pool per database: keep each pool small
        // enough that a few hosts at once stay under PostgreSQL's default 100 connections.
        var database = new NpgsqlConnectionStringBuilder(server) { Database = name, MaxPoolSize = 30 }.ConnectionString;
        return (server, database, name);
    }

    /// <summary>A fresh database that is the test's own, dropped when disposed (after the pooled connections are cleared).</summary>
    public static Owned Own()
    {
        var (server, database, name) = Create();
        return new Owned(server, database, name);
    }

    public sealed class Owned(string server, string connectionString, string name) : IDisposable
    {
        public string ConnectionString { get; } = connectionString;

        public void Dispose()
        {
            NpgsqlConnection.ClearAllPools();
            Drop(server, name);
        }
    }

    /// <summary>
    /// The server all hosts of this test run use: LEDGER_TEST_CONNECTION, or else the private
    /// cluster (in LEDGER_TEST_PG_DIR on LEDGER_TEST_PG_PORT, by default
    /// /var/tmp/run-ledger/test-postgres on 54339), started once for the whole run and stopped
    /// at its end (<see cref="StopServer"/>).
    /// </summary>
    private static string Server()
    {
        lock (Gate)
        {
            if (_server is not null) return _server;
            var configured = Environment.GetEnvironmentVariable("LEDGER_TEST_CONNECTION");
            if (!string.IsNullOrWhiteSpace(configured)) return _server = configured;

            var dir = Environment.GetEnvironmentVariable("LEDGER_TEST_PG_DIR");
            var port = Environment.GetEnvironmentVariable("LEDGER_TEST_PG_PORT");
            var options = new EmbeddedPostgresOptions
            {
                DataDirectory = string.IsNullOrWhiteSpace(dir) ? Path.Combine("/var/tmp", "run-ledger", "test-postgres") : dir,
                Port = int.TryParse(port, out var p) ? p : 54339,
                // A throwaway cluster, like test.sh's: no password (the service's own cluster has one).
                TrustLocalConnections = true,
            };
            _embedded = new EmbeddedPostgres(options, _ => { });
            AppDomain.CurrentDomain.ProcessExit += (_, _) => StopServer();
            _embedded.Start();
            return _server = _embedded.ServerConnectionString();
        }
    }

    /// <summary>
    /// Stops the private cluster if this test run started it (never one that was already
    /// running: another run may be using it) and removes its lock file. The data directory is
    /// kept for the next run to reuse, as the service does with its own cluster: deleting it
    /// takes longer than the test host is given once the run is over. Called once the run is
    /// over (<see cref="LedgerTestFramework"/>), and again, harmlessly, at process exit.
    /// </summary>
    public static void StopServer()
    {
        lock (Gate)
        {
            if (_embedded is not { StartedByUs: true } embedded) return;
            // The lock file first: the test host may be ended soon after the run is over, and
            // pg_ctl, once started, finishes the stop even then.
            TryDelete(() => File.Delete(Path.GetFullPath(embedded.DataDirectory).TrimEnd('/') + ".lock"));
            NpgsqlConnection.ClearAllPools();
            embedded.Stop();
            _server = null;
        }
    }

    private static void TryDelete(Action delete)
    {
        try { delete(); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
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
