using System.Diagnostics;
using Npgsql;

namespace Ledger.Infrastructure;

public sealed class EmbeddedPostgresOptions
{
    /// <summary>Where the private cluster lives. Must be reachable by the postgres user when running as root.</summary>
    public string DataDirectory { get; set; } = Path.Combine("/var/tmp", "run-ledger", "postgres");
    public int Port { get; set; } = 54329;
    public string Database { get; set; } = "ledger";
    /// <summary>Where initdb and pg_ctl are; when unset, PATH and /usr/lib/postgresql/*/bin are searched.</summary>
    public string? BinDirectory { get; set; }
}

/// <summary>
/// Provisions and runs a private PostgreSQL cluster from the machine's own binaries when no
/// connection string is configured. Reuses the cluster on the next start; stops it cleanly
/// (checkpointed, so consistent) when the process that started it stops.
/// </summary>
public sealed class EmbeddedPostgres
{
    private readonly EmbeddedPostgresOptions _options;
    private readonly Action<string> _log;
    private string? _binDirectory;

    public EmbeddedPostgres(EmbeddedPostgresOptions options, Action<string> log)
    {
        _options = options;
        _log = log;
    }

    public bool StartedByUs { get; private set; }
    public string DataDirectory => _options.DataDirectory;

    public string ServerConnectionString(string database = "postgres") => new NpgsqlConnectionStringBuilder
    {
        Host = "127.0.0.1",
        Port = _options.Port,
        Username = "postgres",
        Database = database,
        Pooling = true,
    }.ConnectionString;

    /// <summary>Starts (or reuses) the cluster and makes sure the ledger database exists; returns its connection string.</summary>
    public string Start()
    {
        _binDirectory = FindBinaries(_options.BinDirectory) ?? throw new EmbeddedPostgresUnavailableException(
            "No PostgreSQL server binaries (initdb, pg_ctl) were found on PATH or under /usr/lib/postgresql. " +
            "Either set ConnectionStrings__Ledger to an existing PostgreSQL database, " +
            "or start one with `docker compose up -d postgres` (see docker-compose.yml).");

        var dir = Path.GetFullPath(_options.DataDirectory);
        Directory.CreateDirectory(dir);
        using (AcquireLock(dir))
        {
            if (!File.Exists(Path.Combine(dir, "PG_VERSION")))
            {
                _log($"Initialising a private PostgreSQL cluster in {dir}");
                PrepareOwnership(dir);
                RunTool("initdb", $"-D \"{dir}\" -U postgres --auth=trust -E UTF8 --no-instructions", TimeSpan.FromMinutes(2));
            }

            if (RunTool("pg_ctl", $"status -D \"{dir}\"", TimeSpan.FromSeconds(30), throwOnError: false) == 0)
            {
                _log($"Reusing the private PostgreSQL already running from {dir} on port {_options.Port}");
            }
            else
            {
                _log($"Starting the private PostgreSQL in {dir} on 127.0.0.1:{_options.Port}");
                var logFile = Path.Combine(dir, "server.log");
                try
                {
                    RunTool("pg_ctl",
                        $"-D \"{dir}\" -l \"{logFile}\" -o \"-p {_options.Port} -k '{dir}' -c listen_addresses=127.0.0.1\" -w -t 60 start",
                        TimeSpan.FromSeconds(90));
                }
                catch (EmbeddedPostgresUnavailableException e)
                {
                    // pg_ctl only says "could not start"; the server's own log says why (e.g. the port is taken).
                    throw new EmbeddedPostgresUnavailableException($"{e.Message} Server log ({logFile}): {Tail(logFile)}");
                }
                StartedByUs = true;
            }
        }

        try
        {
            EnsureDatabase(_options.Database);
        }
        catch
        {
            // A cluster this process started and cannot use is not left running.
            Stop();
            throw;
        }
        return ServerConnectionString(_options.Database);
    }

    public void EnsureDatabase(string database)
    {
        using var conn = new NpgsqlConnection(ServerConnectionString());
        conn.Open();
        using var exists = new NpgsqlCommand("select 1 from pg_database where datname = @name", conn);
        exists.Parameters.AddWithValue("name", database);
        if (exists.ExecuteScalar() is null)
        {
            using var create = new NpgsqlCommand($"create database \"{database}\"", conn);
            try { create.ExecuteNonQuery(); }
            catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.DuplicateDatabase) { }
        }
    }

    public void Stop()
    {
        if (!StartedByUs || _binDirectory is null) return;
        _log($"Stopping the private PostgreSQL in {_options.DataDirectory}");
        RunTool("pg_ctl", $"-D \"{Path.GetFullPath(_options.DataDirectory)}\" -m fast -w stop", TimeSpan.FromSeconds(60), throwOnError: false);
        StartedByUs = false;
    }

    private static string Tail(string file)
    {
        try
        {
            return string.Join(" | ", File.ReadLines(file).TakeLast(4));
        }
        catch (IOException)
        {
            return "(unreadable)";
        }
    }

    private static bool IsRoot => Environment.UserName == "root";

    private void PrepareOwnership(string dir)
    {
        if (!IsRoot) return;
        // initdb and postgres refuse to run as root: the cluster belongs to the postgres user.
        Run("chown", $"-R postgres \"{dir}\"", TimeSpan.FromSeconds(30));
        Run("chmod", $"700 \"{dir}\"", TimeSpan.FromSeconds(30));
    }

    private int RunTool(string tool, string arguments, TimeSpan timeout, bool throwOnError = true)
    {
        var path = Path.Combine(_binDirectory!, tool);
        return IsRoot
            ? Run(FindRunuser(), $"-u postgres -- \"{path}\" {arguments}", timeout, throwOnError)
            : Run(path, arguments, timeout, throwOnError);
    }

    /// <summary>runuser lives in the system sbin folder, which a service's PATH often lacks: look there too.</summary>
    private static string FindRunuser()
    {
        var onPath = (Environment.GetEnvironmentVariable("PATH") ?? "")
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(dir => Path.Combine(dir, "runuser"));
        return onPath.Concat(["/usr/sbin/runuser", "/sbin/runuser"]).FirstOrDefault(File.Exists)
               ?? throw new EmbeddedPostgresUnavailableException(
                   "Running as root, the private PostgreSQL must run as the postgres user, but runuser was found " +
                   "neither on PATH nor in /usr/sbin or /sbin. Either set ConnectionStrings__Ledger to an existing PostgreSQL database, " +
                   "or run the ledger as a user other than root.");
    }

    private static int Run(string file, string arguments, TimeSpan timeout, bool throwOnError = true)
    {
        var psi = new ProcessStartInfo(file, arguments)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = "/",
        };
        Process? started;
        try
        {
            started = Process.Start(psi);
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new EmbeddedPostgresUnavailableException($"Could not run {file}: {e.Message}");
        }
        using var process = started ?? throw new EmbeddedPostgresUnavailableException($"Could not run {file}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            throw new EmbeddedPostgresUnavailableException($"{file} {arguments} did not finish within {timeout.TotalSeconds:0}s");
        }
        if (process.ExitCode != 0 && throwOnError)
        {
            throw new EmbeddedPostgresUnavailableException(
                $"{Path.GetFileName(file)} failed with exit code {process.ExitCode}: {stderr.Result.Trim()} {stdout.Result.Trim()}");
        }
        return process.ExitCode;
    }

    private static string? FindBinaries(string? configured)
    {
        var candidates = configured is not null
            ? [configured]
            : (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries).ToList();
        if (configured is null && Directory.Exists("/usr/lib/postgresql"))
        {
            candidates.AddRange(Directory.GetDirectories("/usr/lib/postgresql")
                .OrderByDescending(d => d, StringComparer.Ordinal)
                .Select(d => Path.Combine(d, "bin")));
        }
        foreach (var dir in candidates)
        {
            var initdb = Path.Combine(dir, "initdb");
            if (File.Exists(initdb) && File.Exists(Path.Combine(dir, "pg_ctl")))
            {
                // Resolve symlinks so pg_ctl finds its sibling postgres binary.
                var resolved = new FileInfo(initdb).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? initdb;
                return Path.GetDirectoryName(resolved);
            }
        }
        return null;
    }

    private static FileStream AcquireLock(string dir)
    {
        var lockPath = dir.TrimEnd('/') + ".lock";
        var deadline = DateTime.UtcNow.AddMinutes(2);
        while (true)
        {
            try
            {
                return new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (DateTime.UtcNow < deadline)
            {
                Thread.Sleep(200);
            }
        }
    }
}

public sealed class EmbeddedPostgresUnavailableException(string message) : Exception(message);
