using Microsoft.Extensions.Options;

namespace Ledger.Infrastructure;

public static class Database
{
    /// <summary>
    /// The configured connection string, or a private PostgreSQL started for this process when
    /// none is configured. Exits with a message naming both ways out when neither is possible.
    /// </summary>
    public static string ResolveConnectionString(WebApplicationBuilder builder, ILogger log)
    {
        var configured = builder.Configuration.GetConnectionString("Ledger");
        if (!string.IsNullOrWhiteSpace(configured))
        {
            log.LogInformation("Using the PostgreSQL database from ConnectionStrings:Ledger");
            return configured;
        }

        var options = builder.Configuration.GetSection(LedgerOptions.Section).Get<LedgerOptions>()?.EmbeddedPostgres
                      ?? new EmbeddedPostgresOptions();
        var embedded = new EmbeddedPostgres(options, message => log.LogInformation("{Message}", message));
        log.LogInformation("No ConnectionStrings:Ledger configured: starting a private PostgreSQL in {DataDirectory}", options.DataDirectory);
        var connectionString = embedded.Start();
        builder.Services.AddSingleton(embedded);
        return connectionString;
    }

    public static void StopEmbeddedOnShutdown(this WebApplication app)
    {
        if (app.Services.GetService<EmbeddedPostgres>() is { } embedded)
        {
            app.Lifetime.ApplicationStopped.Register(embedded.Stop);
        }
    }
}
