using System.Net.Sockets;
using JasperFx.CommandLine;
using JasperFx;
using Microsoft.Extensions.Options;
using Npgsql;

namespace Ledger.Infrastructure;

/// <summary>A start that cannot succeed, with the exit code a supervisor sees and one or two plain lines saying what to check.</summary>
public sealed class StartupFailureException(int exitCode, string message, string? check = null) : Exception(message)
{
    public int ExitCode { get; } = exitCode;
    /// <summary>The setting to look at, as a second line; null when the message already names it.</summary>
    public string? Check { get; } = check;
}

/// <summary>
/// Turns every failed start into one or two plain lines and a non-zero exit code (documented in
/// the README), and stops the private PostgreSQL this process started. Runtime errors after the
/// start are not touched.
/// </summary>
public static class StartupFailure
{
    /// <summary>A setting is missing or invalid, or the private PostgreSQL cannot be provisioned.</summary>
    public const int Configuration = 2;
    /// <summary>The configured PostgreSQL cannot be reached or used.</summary>
    public const int DatabaseUnreachable = 3;
    /// <summary>The HTTP address cannot be listened on (taken, or not an address of this machine).</summary>
    public const int ListenFailed = 4;
    /// <summary>Anything else that stopped the start.</summary>
    public const int Other = 1;

    private const string HostCategory = "Microsoft.Extensions.Hosting.Internal.Host";
    private const string WolverineRuntimeCategory = "Wolverine.Runtime.WolverineRuntime";
    private static volatile bool _starting = true;

    /// <summary>
    /// The generic host, and Wolverine's runtime before it (e.g. on a stale generated handler), log
    /// a failed start with its whole stack trace before they rethrow; that failure is reported here
    /// in plain lines instead. Errors after the start are logged as ever. (Wolverine's runtime keeps
    /// the Warning level appsettings.json gives Wolverine.)
    /// </summary>
    public static void QuietHostStartFailures(this ILoggingBuilder logging) => logging
        .AddFilter(HostCategory, level => level >= LogLevel.Information && !(_starting && level >= LogLevel.Error))
        .AddFilter(WolverineRuntimeCategory, level => level >= LogLevel.Warning && !(_starting && level >= LogLevel.Error));

    /// <summary>Where a connection string came from, for the line that says what to check.</summary>
    public static string ConnectionSetting(bool embedded) => embedded
        ? "Ledger:EmbeddedPostgres:Port / DataDirectory (environment Ledger__EmbeddedPostgres__Port / __DataDirectory), or set ConnectionStrings__Ledger"
        : "ConnectionStrings:Ledger (environment ConnectionStrings__Ledger)";

    /// <summary>
    /// Starts the service when the command line asks for it (no command, <c>run</c>, or ASP.NET
    /// flags such as <c>--urls</c>), so that a failed start is reported here; everything else
    /// (verify, export, help) goes to the JasperFx command line as before.
    /// </summary>
    public static async Task<int> RunLedgerAsync(this WebApplication app, string[] args, ILogger log)
    {
        var aspNetFlags = args.Any(a => a.StartsWith("--urls", StringComparison.OrdinalIgnoreCase)
                                        || a.StartsWith("--http_ports", StringComparison.OrdinalIgnoreCase)
                                        || a.StartsWith("--https_ports", StringComparison.OrdinalIgnoreCase));
        var serviceRun = aspNetFlags || args.Length == 0 || args[0].Equals("run", StringComparison.OrdinalIgnoreCase);
        if (JasperFxEnvironment.AutoStartHost && (serviceRun || args[0].StartsWith('-')))
        {
            // A test harness (WebApplicationFactory, Alba) passes only flags and owns the host: it
            // stops and disposes it. This thread starts it and returns once it has stopped. JasperFx's
            // run command would stop and dispose it too, from here, on the harness's stop signal,
            // while the harness is still stopping it: a hosted service then met a disposed
            // container or data source (an ObjectDisposedException in a test's cleanup).
            _starting = false;
            var stopped = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            using var registration = app.Lifetime.ApplicationStopped.Register(() => stopped.TrySetResult());
            await app.StartAsync();
            await stopped.Task;
            return 0;
        }
        if (serviceRun)
        {
            try
            {
                await app.StartAsync();
            }
            catch (Exception e)
            {
                return Report(e, log, app.Services.GetService<EmbeddedPostgres>(), app.Services.GetService<LedgerDatabase>()?.ConnectionString);
            }
            finally
            {
                _starting = false;
            }
            // JasperFx would run the host itself here and answer 0 whatever happened; it is already
            // started. (Going through JasperFx also printed its command discovery on every start.)
            await app.WaitForShutdownAsync();
            return 0;
        }
        _starting = false;
        QuietCommandDiscovery();
        // A command (verify, export, restore...) that started the private PostgreSQL stops it again; one
        // already running, the service's, is left as it was (EmbeddedPostgres.Stop knows which). Taken
        // before the command runs: the command disposes the services when it ends.
        var embedded = app.Services.GetService<EmbeddedPostgres>();
        try
        {
            return await app.RunJasperFxCommands(args);
        }
        finally
        {
            embedded?.StopAfterOwnConnections();
        }
    }

    /// <summary>
    /// JasperFx prints "Searching '&lt;assembly&gt;' for commands" for each of six assemblies before
    /// every command (verify, export, help), until it has applied its service extensions once; a
    /// WebApplication takes none (its host is built already), so applying the empty set marks them
    /// applied and the command's own output comes first.
    /// </summary>
    private static void QuietCommandDiscovery() => new CommandFactory().ApplyExtensions(new ServiceCollection());

    /// <summary>Logs the failure in plain lines, stops the private PostgreSQL if this process started it, and returns the exit code.</summary>
    public static int Report(Exception error, ILogger log, EmbeddedPostgres? embedded, string? connectionString)
    {
        var (code, message, check) = Describe(error, connectionString, embedded is not null);
        log.LogCritical("Cannot start: {Message}", message);
        if (check is not null) log.LogCritical("Check {Setting}.", check);
        try
        {
            embedded?.Stop();
        }
        catch (Exception stop)
        {
            log.LogCritical("The private PostgreSQL in {DataDirectory} could not be stopped: {Reason}", embedded!.DataDirectory, stop.Message);
        }
        return code;
    }

    public static (int Code, string Message, string? Check) Describe(Exception error, string? connectionString, bool embedded)
    {
        switch (error)
        {
            case StartupFailureException s:
                return (s.ExitCode, s.Message, s.Check);
            case OptionsValidationException o:
                return (Configuration, string.Join(" ", o.Failures), null);
            case EmbeddedPostgresUnavailableException p:
                return (Configuration, $"the private PostgreSQL is not available: {p.Message}",
                    "ConnectionStrings__Ledger, or Ledger:EmbeddedPostgres (environment Ledger__EmbeddedPostgres__*)");
            case AggregateException { InnerExceptions.Count: 1 } a:
                return Describe(a.InnerExceptions[0], connectionString, embedded);
        }

        if (GeneratedCode.Describe(error) is { } stale)
        {
            return (Other, stale, null);
        }
        if (Find<NpgsqlException>(error) is { } npgsql)
        {
            return Unreachable(npgsql, connectionString, embedded);
        }
        if (Find<IOException>(error) is { } io && (io.InnerException is SocketException || io.Message.Contains("bind", StringComparison.OrdinalIgnoreCase)))
        {
            return (ListenFailed, io.Message, "--urls / ASPNETCORE_URLS (the address and port to listen on)");
        }
        if (Find<OptionsValidationException>(error) is { } options)
        {
            return (Configuration, string.Join(" ", options.Failures), null);
        }
        if (Find<InvalidOperationException>(error) is { } binding
            && binding.Message.StartsWith("Failed to convert configuration value", StringComparison.Ordinal))
        {
            // e.g. "Failed to convert configuration value at 'Ledger:Batches:MissingAfterSeconds' to type 'System.Int32'."
            return (Configuration, binding.Message.ReplaceLineEndings(" "), null);
        }
        return (Other, $"{error.GetType().Name}: {Flatten(error)}", null);
    }

    /// <summary>Fails with one line naming the setting, host and port when the database cannot be reached; never prints the password.</summary>
    public static void EnsureReachable(string connectionString, bool embedded)
    {
        var probe = Parse(connectionString, embedded);
        probe.Pooling = false;
        try
        {
            using var connection = new NpgsqlConnection(probe.ConnectionString);
            connection.Open();
        }
        catch (NpgsqlException e)
        {
            var (code, message, check) = Unreachable(e, connectionString, embedded);
            throw new StartupFailureException(code, message, check);
        }
    }

    public static NpgsqlConnectionStringBuilder Parse(string connectionString, bool embedded)
    {
        try
        {
            return new NpgsqlConnectionStringBuilder(connectionString);
        }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidOperationException)
        {
            throw new StartupFailureException(Configuration,
                $"ConnectionStrings:Ledger is not a usable PostgreSQL connection string ({e.Message.Split(" (Parameter")[0]}).",
                $"{ConnectionSetting(embedded)}, of the form Host=HOST;Port=5432;Username=USER;Password=PASSWORD;Database=NAME");
        }
    }

    private static (int, string, string?) Unreachable(NpgsqlException e, string? connectionString, bool embedded)
    {
        string where;
        try
        {
            var b = new NpgsqlConnectionStringBuilder(connectionString ?? "");
            where = $"PostgreSQL at {b.Host ?? "localhost"}:{b.Port} (database {b.Database ?? b.Username ?? "?"}, user {b.Username ?? "?"})";
        }
        catch (ArgumentException)
        {
            where = "PostgreSQL";
        }
        var reason = e is PostgresException pg ? $"{pg.MessageText} ({pg.SqlState})" : Flatten(e);
        return (DatabaseUnreachable, $"{where} cannot be used: {reason}", ConnectionSetting(embedded));
    }

    private static T? Find<T>(Exception? e) where T : Exception
    {
        for (; e is not null; e = e.InnerException)
        {
            if (e is T found) return found;
            if (e is AggregateException { InnerExceptions.Count: > 0 } a && Find<T>(a.InnerExceptions[0]) is { } inner) return inner;
        }
        return null;
    }

    /// <summary>The messages of an exception and its causes on one line, without their stack traces.</summary>
    private static string Flatten(Exception e)
    {
        var parts = new List<string>();
        for (Exception? x = e; x is not null && parts.Count < 4; x = x.InnerException)
        {
            var text = x.Message.ReplaceLineEndings(" ").Trim();
            if (text.Length > 0 && !parts.Any(p => p.Contains(text, StringComparison.Ordinal))) parts.Add(text);
        }
        return string.Join(": ", parts);
    }
}
