using FluentValidation;
using JasperFx;
using JasperFx.Events;
using JasperFx.Events.Daemon;
using Ledger.Batches;
using Ledger.OpenApi;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Ledger.Labels;
using Ledger.Leaderboards;
using Ledger.Operations;
using Ledger.Retention;
using Ledger.Runs;
using Ledger.Web;
using Ledger.Webhooks;
using Marten;
using Wolverine.Marten;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using Scalar.AspNetCore;
using Wolverine;
using Wolverine.Http;

var builder = WebApplication.CreateBuilder(StartupDefaults.Options(args));
// Start-up lines on standard output; a refused start on standard error, as plain lines (StartupFailure).
using var startupLog = LoggerFactory.Create(l => l.AddSimpleConsole(o => o.SingleLine = true)
    .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Error));
var log = startupLog.CreateLogger("Ledger.Startup");
builder.Logging.QuietHostStartFailures();

builder.Services.AddOptions<LedgerOptions>().Bind(builder.Configuration.GetSection(LedgerOptions.Section)).ValidateOnStart();
// Without the environment's checks (key lengths): Check below made them on the raw configuration, which describe then hides.
builder.Services.AddSingleton<IValidateOptions<LedgerOptions>>(new LedgerOptionsValidation());

string connectionString;
string? codegenOutput = null;
try
{
    if (GeneratedCode.IsCodegenCommand(args))
    {
        // Generating code needs no settings: no keys, no database (GeneratedCode).
        codegenOutput = GeneratedCode.OutputDirectory(builder.Configuration);
        connectionString = GeneratedCode.OfflineConnectionString;
    }
    else
    {
        // A refused configuration starts nothing, not even the private PostgreSQL.
        LedgerOptionsValidation.Check(builder.Configuration, builder.Environment);
        RetentionOptions.Check(builder.Configuration);
        // describe and help build the host but never start it: no database for them either.
        connectionString = GeneratedCode.IsOfflineCommand(args)
            ? GeneratedCode.OfflineConnectionString
            : Database.ResolveConnectionString(builder, log);
        // describe prints every setting: never the secrets among them.
        if (DescribedConfiguration.IsDescribeCommand(args)) DescribedConfiguration.HideSecrets(builder.Configuration);
    }
}
catch (Exception e) when (e is StartupFailureException or EmbeddedPostgresUnavailableException)
{
    return StartupFailure.Report(e, log, embedded: null, connectionString: null);
}

var ledger = builder.Configuration.GetSection(LedgerOptions.Section).Get<LedgerOptions>() ?? new LedgerOptions();
builder.Services.AddMarten(options =>
    {
        options.UseLedgerStorage(connectionString, ledger.SchemaName);
        options.AddRuns();
        options.AddLeaderboards();
        options.AddBatches();
        options.AddForensics();
        options.AddRetention();
        ledger.Projections.ApplyTo(options, ledger.SchemaName);
        options.AddWebhooks();
    })
    .UseLightweightSessions()
    // Wolverine's PostgreSQL outbox/inbox for webhook deliveries; projections stay with the daemon below.
    .IntegrateWithWolverine()
    .AddWebhookRelay()
    // Leader = Marten's HotCold: one instance per database runs the async projections (docs/operations.md, "Running several nodes").
    .AddAsyncDaemon(ProjectionDaemonOptions.MartenMode(ledger.DaemonMode))
    .ApplyAllDatabaseChangesOnStartup();
builder.Services.AddVerdictWakeup(connectionString, ledger.Projections);

builder.Host.UseWolverine(options =>
{
    // The adapters Wolverine generates are committed and loaded statically: no compiler at run time.
    options.UseGeneratedCode(codegenOutput);
    options.Discovery.IncludeAssembly(typeof(Program).Assembly);
    options.AddWebhooks(builder.Configuration);
});
builder.Services.AddWolverineHttp();

builder.Services.AddValidatorsFromAssemblyContaining<Program>(ServiceLifetime.Singleton);
builder.Services.AddLedgerInfrastructure(connectionString);
builder.Services.AddLabels(builder.Configuration);
builder.Services.AddBatches(builder.Configuration);
builder.Services.AddForensicsServices(builder.Configuration);
builder.Services.AddLeaderboardServices(builder.Configuration);
// After the forensics' start-up work (counted refusals, the KPI backfill, the scrub): the janitor submits its first sweep at once.
builder.Services.AddRuns(builder.Configuration);
builder.Services.ConfigureHttpJsonOptions(o => LedgerJson.Configure(o.SerializerOptions));
builder.Services.AddLedgerConsole(builder.Configuration);
builder.Services.AddLedgerForwardedHeaders(builder.Configuration);
builder.Services.AddWrongKeyThrottle(builder.Configuration);
builder.Services.AddHealthChecks().AddCheck<DatabaseHealthCheck>("database");
builder.Services.AddLedgerOpenApi();
builder.Services.AddLedgerTelemetry(builder.Configuration);
builder.Services.AddWebhooks(builder.Configuration);
builder.Services.AddRetentionServices(builder.Configuration);

var app = builder.Build();
app.StopEmbeddedOnShutdown();

app.UseLedgerForwardedHeaders();
app.UseLedgerErrors();
app.UseWrongKeyThrottle();
app.UseConsoleHeaders();
app.UseDocsPageHeaders();
app.UseRouting();
app.UseRateLimiter();
app.UseInputBoundary();
app.MapOpenApi("/openapi/{documentName}.json");
// The interactive page over the description; its scripts are embedded, and it asks no outside host (no fonts, no telemetry).
// Nothing that needs Scalar's services or means nothing for a self-hosted ledger is offered:
// no AI agent ("Ask AI"), no MCP, no developer toolbar ("Share", "Deploy", "Generate SDK"), no
// "Open API Client" link to client.scalar.com (each operation's own "Test Request" stays, on this page).
app.MapScalarApiReference("/docs", o => o
    .WithTitle("Run Ledger API")
    .WithOpenApiRoutePattern("/openapi/{documentName}.json")
    .DisableDefaultFonts()
    .DisableTelemetry()
    .DisableAgent()
    .DisableMcp()
    .HideDeveloperTools()
    .HideClientButton()
    .WithDotNetFlag(false));
app.MapHealthChecks("/health", new HealthCheckOptions { ResponseWriter = HealthResponse.Write })
    .WithMetadata(new HttpMethodMetadata(["GET", "HEAD"]));
app.MapGet("/health/live", () => Results.Ok(new { status = "alive" })).ExcludeFromDescription();
app.MapLedgerMetrics();
try
{
    if (codegenOutput is null) GeneratedCode.AssertEndpointsRegistered(typeof(Program).Assembly);
    // Statically loaded endpoints are built here, before the host starts: a setting their services
    // read, or a stale generated adapter, fails now and is reported as a failed start.
    // A non-integer page, pageSize, limit, version or after is refused (422) before any endpoint
    // (InputBoundary); binding strictly as well makes Wolverine's start-up warning about lenient binding moot.
    app.MapWolverineEndpoints(http => http.RejectUnparseableQueryValues = true);
}
catch (Exception e) when (!JasperFx.CommandLine.JasperFxEnvironment.AutoStartHost)
{
    return StartupFailure.Report(e, log, app.Services.GetService<EmbeddedPostgres>(), connectionString);
}
app.MapLedgerConsole();
app.MapProblemFallback();

if (codegenOutput is not null) GeneratedCode.ClearBeforeWrite(args, codegenOutput);
return await app.RunLedgerAsync(args, log);

public partial class Program;
