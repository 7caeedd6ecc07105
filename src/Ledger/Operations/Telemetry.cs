using Ledger.Infrastructure;
using Npgsql;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace Ledger.Operations;

/// <summary>
/// Metrics and traces through OpenTelemetry: a Prometheus scrape at <c>GET /metrics</c> (read or admin
/// key), and OTLP export of both when the standard <c>OTEL_EXPORTER_OTLP_*ENDPOINT</c> variables are set
/// (every other <c>OTEL_*</c> variable is read by the exporter itself). See docs/operations.md.
/// </summary>
public static class Telemetry
{
    public const string ServiceName = "run-ledger";

    public static IServiceCollection AddLedgerTelemetry(this IServiceCollection services, IConfiguration configuration)
    {
        services.Configure<MetricsOptions>(configuration.GetSection(MetricsOptions.Section));
        services.AddSingleton<StoredStateGauges>();
        services.AddSingleton<LedgerMetrics>();
        var metrics = configuration.GetSection(MetricsOptions.Section).Get<MetricsOptions>() ?? new MetricsOptions();
        bool Otlp(string signal) =>
            !string.IsNullOrWhiteSpace(configuration["OTEL_EXPORTER_OTLP_ENDPOINT"])
            || !string.IsNullOrWhiteSpace(configuration[$"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"]);

        services.AddOpenTelemetry()
            .ConfigureResource(r =>
            {
                if (string.IsNullOrWhiteSpace(configuration["OTEL_SERVICE_NAME"])) r.AddService(ServiceName);
            })
            .WithMetrics(m =>
            {
                m.AddMeter(LedgerMetrics.MeterName)
                    .AddMeter("Wolverine*", "Marten*")
                    .AddAspNetCoreInstrumentation()
                    .AddRuntimeInstrumentation()
                    .AddNpgsqlInstrumentation()
                    .AddPrometheusExporter(o => o.ScrapeResponseCacheDurationMilliseconds = Math.Max(0, metrics.ScrapeCacheMilliseconds));
                if (Otlp("METRICS")) m.AddOtlpExporter();
            })
            .WithTracing(t =>
            {
                t.AddSource(LedgerTracing.SourceName, "Wolverine*", "Marten*")
                    .AddAspNetCoreInstrumentation(o => o.Filter = context => !context.Request.Path.StartsWithSegments("/metrics"))
                    .AddNpgsql();
                if (Otlp("TRACES")) t.AddOtlpExporter();
            });
        return services;
    }

    /// <summary>
    /// <c>GET /metrics</c>: the Prometheus text of every meter above, for a read or admin key. Credentials are
    /// checked first, as on every other call (401 without or with an unknown key, 403 with a worker key,
    /// both problem details that say nothing else).
    /// </summary>
    public static IEndpointConventionBuilder MapLedgerMetrics(this IEndpointRouteBuilder app) =>
        app.MapPrometheusScrapingEndpoint("/metrics", meterProvider: null, configureBranchedPipeline: branch => branch.Use(async (context, next) =>
        {
            var access = context.RequestServices.GetRequiredService<Access>();
            if (access.Require(context, Role.Admin, Role.Reader) is { } denied)
            {
                await denied.ToResult().ExecuteAsync(context);
                return;
            }
            try
            {
                await context.RequestServices.GetRequiredService<StoredStateGauges>().RefreshAsync(context.RequestAborted);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // The scrape still answers; the stored-state gauges are left out (or stale) until the database is back.
            }
            await next(context);
        }), optionsName: null)
        .WithMetadata(new HttpMethodMetadata(["GET"]))
        .ExcludeFromDescription();
}
