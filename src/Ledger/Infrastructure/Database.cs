using Microsoft.Extensions.Options;

namespace Ledger.Infrastructure;

public static class Database
{
    /// <summary>
    /// The configured connection string, or a private PostgreSQL started for this process when
    /// none is configured; either way one the ledger can connect to. Throws
    /// <see cref="StartupFailureException"/> (a plain message naming the setting, host and port)
    /// or <see cref="EmbeddedPostgresUnavailableException"/> when neither is possible, having
    /// stopped the private PostgreSQL if it started it. Either way with automatic statement
    /// preparation merged in (<see cref="ConnectionSettings"/>), unless the operator set it.
    /// </summary>
    public static string ResolveConnectionString(WebApplicationBuilder builder, ILogger log)
    {
        var configured = builder.Configuration.GetConnectionString("Ledger");
        if (!string.IsNullOrWhiteSpace(configured))
        {
            var target = StartupFailure.Parse(configured, embedded: false);
            log.LogInformation("Using the PostgreSQL database from ConnectionStrings:Ledger ({Host}:{Port}, database {Database})",
                target.Host, target.Port, target.Database);
            StartupFailure.EnsureReachable(configured, embedded: false);
            return ConnectionSettings.WithStatementCaching(configured);
        }

        var options = builder.Configuration.GetSection(LedgerOptions.Section).Get<LedgerOptions>()?.EmbeddedPostgres
                      ?? new EmbeddedPostgresOptions();
        var embedded = new EmbeddedPostgres(options, message => log.LogInformation("{Message}", message));
        log.LogInformation("No ConnectionStrings:Ledger configured: starting a private PostgreSQL in {DataDirectory}", options.DataDirectory);
        if (!builder.Environment.IsDevelopment())
        {
            log.LogWarning("The private PostgreSQL is a single-machine convenience: one cluster on this machine's disk, reachable from 127.0.0.1 " +
                           "with the password in {PasswordFile}, with no replication and no backups. For production, set ConnectionStrings__Ledger " +
                           "to a PostgreSQL you operate.", options.PasswordFilePath);
        }
        string connectionString;
        try
        {
            // Start stops the cluster again itself when it started it and cannot use it.
            connectionString = embedded.Start();
        }
        catch (Npgsql.NpgsqlException e)
        {
            var (code, message, check) = StartupFailure.Describe(e, embedded.ServerConnectionString(options.Database), embedded: true);
            throw new StartupFailureException(code, message, check);
        }
        builder.Services.AddSingleton(embedded);
        return ConnectionSettings.WithStatementCaching(connectionString);
    }

    public static void StopEmbeddedOnShutdown(this WebApplication app)
    {
        if (app.Services.GetService<EmbeddedPostgres>() is { } embedded)
        {
            app.Lifetime.ApplicationStopped.Register(() =>
            {
                // The verdict listener holds a connection of ours too.
                app.Services.GetService<Ledger.Leaderboards.VerdictWakeup>()?.Stop();
                embedded.StopAfterOwnConnections();
            });
        }
    }

    /// <summary>
    /// Stops the private PostgreSQL if this process started it, our own pooled connections closed
    /// first: stopping PostgreSQL under an open one logs a 57P01 stack trace.
    /// </summary>
    public static void StopAfterOwnConnections(this EmbeddedPostgres embedded)
    {
        Npgsql.NpgsqlConnection.ClearAllPools();
        embedded.Stop();
    }
}
