using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
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
    /// <summary>
    /// The file holding the cluster's superuser password (mode 0600, owned by the user the ledger
    /// runs as); when unset, beside the data directory: <c>&lt;DataDirectory&gt;.password</c>.
    /// </summary>
    public string? PasswordFile { get; set; }
    /// <summary>
    /// Lets every local user connect as superuser without a password (<c>initdb --auth=trust</c>), as
    /// clusters made before passwords were required did. Only for a throwaway cluster (the tests');
    /// refused outside Development. Off: a trust cluster found at start is upgraded to passwords.
    /// </summary>
    public bool TrustLocalConnections { get; set; }

    public string PasswordFilePath => Path.GetFullPath(PasswordFile ?? Path.GetFullPath(DataDirectory).TrimEnd('/') + ".password");
}

/// <summary>
/// Provisions and runs a private PostgreSQL cluster from the machine's own binaries when no
/// connection string is configured. Reuses the cluster on the next start; stops it cleanly
/// (checkpointed, so consistent) when the process that started it stops.
/// Every connection, TCP on 127.0.0.1 and the Unix socket alike, needs the superuser's password
/// (scram-sha-256): it is generated at initdb and kept in <see cref="EmbeddedPostgresOptions.PasswordFilePath"/>,
/// readable only by the ledger's user; a cluster made with trust authentication is upgraded at start.
/// </summary>
public sealed class EmbeddedPostgres
{
    private const string Superuser = "postgres";
    private readonly EmbeddedPostgresOptions _options;
    private readonly Action<string> _log;
    private string? _binDirectory;
    private string? _password;

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
        Username = Superuser,
        Password = _password ?? ReadPassword(),
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
        var upgrade = false;
        using (AcquireLock(dir))
        {
            if (!File.Exists(Path.Combine(dir, "PG_VERSION")))
            {
                _log($"Initialising a private PostgreSQL cluster in {dir}");
                PrepareOwnership(dir);
                if (_options.TrustLocalConnections)
                {
                    RunTool("initdb", $"-D \"{dir}\" -U {Superuser} --auth=trust -E UTF8 --no-instructions", TimeSpan.FromMinutes(2));
                }
                else
                {
                    Initialise(dir, _password = ReadPassword() ?? CreatePassword());
                }
            }
            else if (!_options.TrustLocalConnections)
            {
                // A cluster made before passwords were required trusts every local user: it gets a password now.
                upgrade = HbaTrusts(dir);
                _password = ReadPassword() ?? (upgrade
                    ? CreatePassword()
                    : throw new EmbeddedPostgresUnavailableException(
                        $"The private PostgreSQL in {dir} requires a password, but its password file {_options.PasswordFilePath} is missing. " +
                        "Restore that file (Ledger:EmbeddedPostgres:PasswordFile), or move the data directory away to start a new, empty cluster."));
            }
            else
            {
                _password = ReadPassword();
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

            if (upgrade)
            {
                try
                {
                    RequirePassword(dir);
                }
                catch
                {
                    Stop();
                    throw;
                }
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

    /// <summary>initdb with password authentication for local and host connections; the password reaches it in a file only the cluster's owner can read, removed at once.</summary>
    private void Initialise(string dir, string password)
    {
        var pwfile = dir.TrimEnd('/') + ".initdb-password";
        File.Delete(pwfile);
        WritePrivate(pwfile, password + "\n");
        try
        {
            if (IsRoot) Run("chown", $"postgres \"{pwfile}\"", TimeSpan.FromSeconds(30));
            RunTool("initdb",
                $"-D \"{dir}\" -U {Superuser} --auth-local=scram-sha-256 --auth-host=scram-sha-256 --pwfile=\"{pwfile}\" -E UTF8 --no-instructions",
                TimeSpan.FromMinutes(2));
        }
        finally
        {
            File.Delete(pwfile);
        }
    }

    /// <summary>True when pg_hba.conf lets some connection in without a password.</summary>
    private static bool HbaTrusts(string dir) => File.ReadLines(Path.Combine(dir, "pg_hba.conf")).Any(line => TrustMethod.IsMatch(Uncommented(line)));

    private static readonly Regex TrustMethod = new(@"(?<=\s)trust(?=\s|$)", RegexOptions.CultureInvariant);

    private static string Uncommented(string line) => line.IndexOf('#') is var hash and >= 0 ? line[..hash] : line;

    /// <summary>
    /// Upgrades a trust cluster (running by now): the superuser gets the password (sent as a SCRAM
    /// verifier, so that not even a statement log could show it), every trust line of pg_hba.conf
    /// becomes scram-sha-256, and the server reloads it. Each step can be repeated, so a start
    /// interrupted half-way finishes the upgrade next time.
    /// </summary>
    private void RequirePassword(string dir)
    {
        var trusting = new NpgsqlConnectionStringBuilder(ServerConnectionString()) { Password = null, Pooling = false }.ConnectionString;
        using (var conn = new NpgsqlConnection(trusting))
        {
            conn.Open();
            using (var alter = new NpgsqlCommand($"alter role {Superuser} with password '{ScramVerifier(_password!)}'", conn)) alter.ExecuteNonQuery();

            var hba = Path.Combine(dir, "pg_hba.conf");
            var lines = File.ReadAllLines(hba).Select(line =>
            {
                var body = Uncommented(line);
                return TrustMethod.IsMatch(body) ? TrustMethod.Replace(body, "scram-sha-256") + line[body.Length..] : line;
            });
            var rewritten = hba + ".ledger-tmp";
            File.Delete(rewritten);
            WritePrivate(rewritten, string.Join("\n", lines) + "\n");
            if (IsRoot) Run("chown", $"postgres \"{rewritten}\"", TimeSpan.FromSeconds(30));
            File.Move(rewritten, hba, overwrite: true);

            using var reload = new NpgsqlCommand("select pg_reload_conf()", conn);
            reload.ExecuteNonQuery();
        }

        // The reload is asynchronous: wait until a connection without the password is refused.
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (true)
        {
            try
            {
                using var probe = new NpgsqlConnection(trusting);
                probe.Open();
            }
            catch (NpgsqlException)
            {
                break;
            }
            if (DateTime.UtcNow > deadline) throw new EmbeddedPostgresUnavailableException($"The private PostgreSQL in {dir} still accepts connections without a password after its pg_hba.conf was rewritten.");
            Thread.Sleep(100);
        }
        _log($"Upgraded the private PostgreSQL in {dir} from trust to password authentication (scram-sha-256); the password is kept in {_options.PasswordFilePath}");
    }

    /// <summary>A SCRAM-SHA-256 verifier of the password, in the form PostgreSQL stores (RFC 5803); ALTER ROLE takes it as it is.</summary>
    public static string ScramVerifier(string password, byte[]? salt = null, int iterations = 4096)
    {
        salt ??= RandomNumberGenerator.GetBytes(16);
        var salted = Rfc2898DeriveBytes.Pbkdf2(Encoding.UTF8.GetBytes(password), salt, iterations, HashAlgorithmName.SHA256, 32);
        var clientKey = HMACSHA256.HashData(salted, "Client Key"u8);
        var serverKey = HMACSHA256.HashData(salted, "Server Key"u8);
        return $"SCRAM-SHA-256${iterations}:{Convert.ToBase64String(salt)}${Convert.ToBase64String(SHA256.HashData(clientKey))}:{Convert.ToBase64String(serverKey)}";
    }

    /// <summary>The kept password, or null when there is no password file.</summary>
    private string? ReadPassword()
    {
        var file = _options.PasswordFilePath;
        if (!File.Exists(file)) return null;
        // Only the ledger's user may read it, whatever a copy or an umask did to it.
        if (!OperatingSystem.IsWindows() && (File.GetUnixFileMode(file) & ~(UnixFileMode.UserRead | UnixFileMode.UserWrite)) != 0)
        {
            File.SetUnixFileMode(file, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
        var password = File.ReadAllText(file).Trim();
        return password.Length == 0 ? throw new EmbeddedPostgresUnavailableException($"The password file {file} of the private PostgreSQL is empty.") : password;
    }

    /// <summary>A new random password (256 bits), written to the password file before any cluster uses it.</summary>
    private string CreatePassword()
    {
        var password = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_');
        var file = _options.PasswordFilePath;
        Directory.CreateDirectory(Path.GetDirectoryName(file)!);
        var temporary = file + ".tmp";
        File.Delete(temporary);
        WritePrivate(temporary, password + "\n");
        File.Move(temporary, file, overwrite: false);
        return password;
    }

    /// <summary>Creates the file readable and writable by its owner only, from the first byte on.</summary>
    private static void WritePrivate(string path, string content)
    {
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using var stream = new FileStream(path, options);
        stream.Write(Encoding.UTF8.GetBytes(content));
        stream.Flush(flushToDisk: true);
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
