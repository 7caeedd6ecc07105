using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Ledger.Tests.Fixtures;
using Npgsql;

namespace Ledger.Tests.Infrastructure;

/// <summary>
/// The built service started as a real process, as a supervisor starts it: a refused start is
/// one or two plain lines naming what to check and a non-zero exit code, and leaves nothing
/// running. Also the command line's export, from the caller's working directory.
/// </summary>
public sealed class StartupFailureTests
{
    private static readonly TimeSpan StartLimit = TimeSpan.FromSeconds(90);

    [Fact]
    public void production_without_an_admin_key_refuses_in_plain_lines_and_starts_nothing()
    {
        using var cluster = new PrivateCluster();
        var result = LedgerProcess.Run(new()
        {
            ["ASPNETCORE_ENVIRONMENT"] = "Production",
            ["Ledger__EmbeddedPostgres__Port"] = cluster.Port.ToString(),
            ["Ledger__EmbeddedPostgres__DataDirectory"] = cluster.DataDirectory,
        });

        Assert.Equal(2, result.ExitCode);
        result.AssertPlainRefusal();
        Assert.Equal(["crit: Ledger.Startup[0] Cannot start: Ledger:AdminKey (environment Ledger__AdminKey) must be set."], result.StderrLines);
        // Refused before the private PostgreSQL was even provisioned.
        Assert.False(Directory.Exists(cluster.DataDirectory), result.All);
        Assert.False(PrivateCluster.Listening(cluster.Port));
    }

    [Fact]
    public void outside_development_a_key_shorter_than_16_characters_is_refused_in_plain_words_that_never_show_it()
    {
        using var cluster = new PrivateCluster();
        var result = LedgerProcess.Run(new()
        {
            ["ASPNETCORE_ENVIRONMENT"] = "Production",
            ["Ledger__AdminKey"] = "short-admin-key",          // 15 characters
            ["Ledger__WorkerKeys__0"] = "",                     // unset, as docker-compose passes it: no key, not a short one
            ["Ledger__ReadKeys__0"] = "a-read-key-long-enough",
            ["Ledger__ReadKeys__1"] = "tiny-read",
            ["Ledger__EmbeddedPostgres__Port"] = cluster.Port.ToString(),
            ["Ledger__EmbeddedPostgres__DataDirectory"] = cluster.DataDirectory,
        });

        Assert.Equal(2, result.ExitCode);
        result.AssertPlainRefusal();
        Assert.Equal(["crit: Ledger.Startup[0] Cannot start: Ledger:AdminKey, Ledger:ReadKeys:1 are shorter than 16 characters; " +
                      "outside Development every key must have at least 16 (e.g. `openssl rand -hex 24`)."], result.StderrLines);
        Assert.DoesNotContain("short-admin-key", result.All);
        Assert.DoesNotContain("tiny-read", result.All);
        Assert.False(Directory.Exists(cluster.DataDirectory), result.All);
    }

    [Fact]
    public void describe_prints_the_configuration_but_none_of_its_secrets()
    {
        var result = LedgerProcess.Run(new()
        {
            ["ASPNETCORE_ENVIRONMENT"] = "Production",
            ["Ledger__AdminKey"] = "describe-secret-admin",
            ["Ledger__WorkerKeys__0"] = "describe-secret-worker",
            ["Ledger__ReadKeys__0"] = "describe-secret-reader",
            ["ConnectionStrings__Ledger"] = "Host=db.invalid;Username=ledger;Password=describe-secret-password",
            ["OTHER_SERVICE_TOKEN"] = "describe-secret-token",
            ["Ledger__SchemaName"] = "described_schema",
        }, ["describe"]);

        Assert.True(result.ExitCode == 0, $"describe exits 0, not {result.ExitCode}:\n{result.All}");
        Assert.DoesNotContain("describe-secret", result.All);
        // Still a description of the configuration: its keys, and the values that are not secrets.
        Assert.Contains("AdminKey", result.All);
        Assert.Contains("described_schema", result.All);
    }

    [Fact]
    public void a_refusal_after_the_private_postgres_started_stops_it_even_without_sbin_on_path()
    {
        using var cluster = new PrivateCluster();
        var result = LedgerProcess.Run(new()
        {
            ["ASPNETCORE_ENVIRONMENT"] = "Production",
            ["Ledger__AdminKey"] = "startup-test-admin-key",
            // Checked by the host at start, after the private PostgreSQL is up.
            ["Ledger__Batches__MissingAfterSeconds"] = "0",
            ["Ledger__EmbeddedPostgres__Port"] = cluster.Port.ToString(),
            ["Ledger__EmbeddedPostgres__DataDirectory"] = cluster.DataDirectory,
            // As under a supervisor whose PATH lacks the system sbin folder (where runuser lives).
            ["PATH"] = "/usr/local/bin:/usr/bin:/bin",
        });

        Assert.Equal(2, result.ExitCode);
        result.AssertPlainRefusal();
        Assert.Contains($"Starting the private PostgreSQL in {cluster.DataDirectory} on 127.0.0.1:{cluster.Port}", result.Stdout);
        // Outside Development the operator is told plainly what the private PostgreSQL is (and is not).
        Assert.Contains("The private PostgreSQL is a single-machine convenience", result.Stdout);
        Assert.Contains($"{cluster.DataDirectory}.password", result.Stdout);
        Assert.Equal(["crit: Ledger.Startup[0] Cannot start: Ledger:Batches:MissingAfterSeconds must be at least 1."], result.StderrLines);
        Assert.Contains($"Stopping the private PostgreSQL in {cluster.DataDirectory}", result.Stdout);
        Assert.False(PrivateCluster.Listening(cluster.Port), $"something still listens on {cluster.Port}:\n{result.All}");
    }

    [Fact]
    public void an_unreachable_database_names_the_setting_host_and_port_and_never_the_password()
    {
        var port = PrivateCluster.ClosedPort();
        var result = LedgerProcess.Run(new()
        {
            ["ASPNETCORE_ENVIRONMENT"] = "Production",
            ["Ledger__AdminKey"] = "startup-test-admin-key",
            ["ConnectionStrings__Ledger"] = $"Host=127.0.0.1;Port={port};Username=ledger;Password=pw-must-not-show;Database=ledger;Timeout=5",
        });

        Assert.Equal(3, result.ExitCode);
        result.AssertPlainRefusal();
        Assert.Equal(2, result.StderrLines.Length);
        Assert.StartsWith($"crit: Ledger.Startup[0] Cannot start: PostgreSQL at 127.0.0.1:{port} (database ledger, user ledger) cannot be used: ", result.StderrLines[0]);
        Assert.Equal("crit: Ledger.Startup[0] Check ConnectionStrings:Ledger (environment ConnectionStrings__Ledger).", result.StderrLines[1]);
        Assert.DoesNotContain("pw-must-not-show", result.All);
    }

    [Fact]
    public void a_garbage_connection_string_is_two_plain_lines()
    {
        var result = LedgerProcess.Run(new()
        {
            ["ASPNETCORE_ENVIRONMENT"] = "Production",
            ["Ledger__AdminKey"] = "startup-test-admin-key",
            ["ConnectionStrings__Ledger"] = "this is not a connection string",
        });

        Assert.Equal(2, result.ExitCode);
        result.AssertPlainRefusal();
        Assert.Equal(2, result.StderrLines.Length);
        Assert.StartsWith("crit: Ledger.Startup[0] Cannot start: ConnectionStrings:Ledger is not a usable PostgreSQL connection string (", result.StderrLines[0]);
        Assert.StartsWith("crit: Ledger.Startup[0] Check ConnectionStrings:Ledger (environment ConnectionStrings__Ledger), of the form Host=", result.StderrLines[1]);
    }

    [Fact]
    public void a_setting_of_the_wrong_type_found_by_the_host_at_start_is_one_plain_line()
    {
        var (server, database, name) = TestDatabase.Create();
        try
        {
            var result = LedgerProcess.Run(new()
            {
                ["ASPNETCORE_ENVIRONMENT"] = "Production",
                ["Ledger__AdminKey"] = "startup-test-admin-key",
                ["ConnectionStrings__Ledger"] = database,
                ["Ledger__Batches__MissingAfterSeconds"] = "soon",
            });

            Assert.Equal(2, result.ExitCode);
            result.AssertPlainRefusal();
            Assert.Equal(["crit: Ledger.Startup[0] Cannot start: Failed to convert configuration value 'soon' at " +
                          "'Ledger:Batches:MissingAfterSeconds' to type 'System.Int32'."], result.StderrLines);
        }
        finally
        {
            TestDatabase.Drop(server, name);
        }
    }

    [Fact]
    public async Task a_command_stops_the_private_postgres_it_started_and_leaves_the_services_own_running()
    {
        using var cluster = new PrivateCluster();
        var cwd = Directory.CreateTempSubdirectory("ledger-command-").FullName;
        try
        {
            var env = new Dictionary<string, string?>
            {
                ["ASPNETCORE_ENVIRONMENT"] = "Production",
                ["Ledger__AdminKey"] = "startup-test-admin-key",
                ["Ledger__EmbeddedPostgres__Port"] = cluster.Port.ToString(),
                ["Ledger__EmbeddedPostgres__DataDirectory"] = cluster.DataDirectory,
                ["Ledger__Janitor__Enabled"] = "false",
            };

            // Alone: verify starts the private PostgreSQL for itself and stops it when it is done.
            var alone = LedgerProcess.Run(env, ["verify"], cwd);
            Assert.True(alone.ExitCode == 0, alone.All);
            Assert.Contains($"Starting the private PostgreSQL in {cluster.DataDirectory}", alone.Stdout);
            Assert.Contains($"Stopping the private PostgreSQL in {cluster.DataDirectory}", alone.Stdout);
            Assert.False(PrivateCluster.Listening(cluster.Port), $"something still listens on {cluster.Port}:\n{alone.All}");

            // Beside the running service: the command uses the service's PostgreSQL and leaves it running.
            using var service = LedgerProcess.Start(env, ["--urls", "http://127.0.0.1:0"], cwd);
            await service.WaitForAddress(StartLimit);
            var beside = LedgerProcess.Run(env, ["verify"], cwd);
            Assert.True(beside.ExitCode == 0, beside.All);
            Assert.DoesNotContain("Stopping the private PostgreSQL", beside.Stdout);
            Assert.True(PrivateCluster.Listening(cluster.Port), beside.All);
            var stopped = service.Terminate(TimeSpan.FromSeconds(30));
            Assert.True(stopped.ExitCode == 0, stopped.All);
            Assert.False(PrivateCluster.Listening(cluster.Port), stopped.All);
        }
        finally
        {
            Directory.Delete(cwd, recursive: true);
        }
    }

    [Fact]
    public async Task export_writes_relative_to_the_callers_directory_and_refuses_an_unknown_run()
    {
        var (server, database, name) = TestDatabase.Create();
        var cwd = Directory.CreateTempSubdirectory("ledger-export-").FullName;
        try
        {
            var env = new Dictionary<string, string?>
            {
                ["ASPNETCORE_ENVIRONMENT"] = "Production",
                ["Ledger__AdminKey"] = "startup-test-admin-key",
                ["ConnectionStrings__Ledger"] = database,
                ["Ledger__Janitor__Enabled"] = "false",
                ["Ledger__DaemonMode"] = "Disabled",
            };
            var runId = $"export-{Guid.NewGuid():N}";
            await RegisterThroughTheService(env, runId);

            var file = $"{runId}.ndjson";
            var export = LedgerProcess.Run(env, ["export", "--run", runId, "--out", file], cwd);
            Assert.True(export.ExitCode == 0, export.All);
            var lines = File.ReadAllLines(Path.Combine(cwd, file));
            Assert.Single(lines);
            Assert.Contains($"\"runId\":\"{runId}\"", lines[0]);
            Assert.Contains("\"type\":\"run.registered\"", lines[0]);
            Assert.Contains($"export: 1 events written to {Path.Combine(cwd, file)}", export.Stderr);
            Assert.False(File.Exists(Path.Combine(AppContext.BaseDirectory, file)));

            var unknown = $"no-such-run-{Guid.NewGuid():N}";
            var refused = LedgerProcess.Run(env, ["export", "--run", unknown, "--out", "unknown.ndjson"], cwd);
            Assert.Equal(1, refused.ExitCode);
            Assert.Contains($"export: no run '{unknown}' in this ledger; nothing exported", refused.Stderr);
            Assert.DoesNotContain("0 events", refused.All);
            Assert.False(File.Exists(Path.Combine(cwd, "unknown.ndjson")));
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            TestDatabase.Drop(server, name);
            Directory.Delete(cwd, recursive: true);
        }
    }

    /// <summary>Starts the service on a free port, registers one run over HTTP and stops it with SIGTERM, as a supervisor would.</summary>
    private static async Task RegisterThroughTheService(Dictionary<string, string?> env, string runId)
    {
        using var service = LedgerProcess.Start(env, ["--urls", "http://127.0.0.1:0"], Directory.GetCurrentDirectory());
        var address = await service.WaitForAddress(StartLimit);
        using var http = new HttpClient { BaseAddress = new Uri(address) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "startup-test-admin-key");
        var response = await http.PostAsync("/api/runs",
            new StringContent($"{{\"runId\":\"{runId}\"}}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);

        var stopped = service.Terminate(TimeSpan.FromSeconds(30));
        Assert.True(stopped.ExitCode == 0, $"a clean stop exits 0, not {stopped.ExitCode}:\n{stopped.All}");
    }
}

/// <summary>The Ledger.dll next to the test assembly, run by the dotnet host as its own process, with only the environment given.</summary>
internal sealed class LedgerProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stdout = new();
    private readonly StringBuilder _stderr = new();
    private readonly TaskCompletionSource<string> _address = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private LedgerProcess(Process process)
    {
        _process = process;
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (_stdout) _stdout.AppendLine(e.Data);
            if (Regex.Match(e.Data, @"Now listening on: (http://\S+)") is { Success: true } m) _address.TrySetResult(m.Groups[1].Value);
        };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (_stderr) _stderr.AppendLine(e.Data);
        };
    }

    public static LedgerProcess Start(Dictionary<string, string?> env, string[] args, string workingDirectory)
    {
        var dll = ServiceAssembly();
        Assert.True(File.Exists(dll), $"{dll} is built by the project reference");
        var psi = StartInfo(DotnetHost(), ["exec", dll, .. args], env, workingDirectory);
        var process = new Process { StartInfo = psi };
        var ledger = new LedgerProcess(process);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return ledger;
    }

    /// <summary>
    /// How a process of the ledger is started (the service itself, or a command around it), its output
    /// redirected, with <paramref name="env"/> as the only settings of the ledger: the in-process test
    /// host sets the ledger's settings as environment variables, and none of them leak in.
    /// </summary>
    internal static ProcessStartInfo StartInfo(string file, IEnumerable<string> args, Dictionary<string, string?> env, string workingDirectory)
    {
        var psi = new ProcessStartInfo(file, args)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory,
        };
        foreach (var key in psi.Environment.Keys.ToList())
        {
            if (key.StartsWith("Ledger__", StringComparison.OrdinalIgnoreCase) || key.StartsWith("ConnectionStrings__", StringComparison.OrdinalIgnoreCase)
                || key.StartsWith("ASPNETCORE_", StringComparison.OrdinalIgnoreCase) || key is "DOTNET_ENVIRONMENT" or "LEDGER_TEST_CONNECTION")
            {
                psi.Environment.Remove(key);
            }
        }
        foreach (var (key, value) in env) psi.Environment[key] = value;
        return psi;
    }

    /// <summary>
    /// The service as it is built in its own output folder, with only its own dependencies: run
    /// from the test folder, its assembly scanning would also load the test assembly, whose
    /// xunit attributes it cannot resolve.
    /// </summary>
    internal static string ServiceAssembly()
    {
        var testBin = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var framework = testBin.Name;               // net10.0
        var configuration = testBin.Parent!.Name;   // Debug or Release
        for (var dir = testBin; dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Ledger.sln")))
            {
                return Path.Combine(dir.FullName, "src", "Ledger", "bin", configuration, framework, "Ledger.dll");
            }
        }
        return Path.Combine(AppContext.BaseDirectory, "Ledger.dll");
    }

    /// <summary>Runs to its end; fails the test if it does not end within the limit.</summary>
    public static Result Run(Dictionary<string, string?> env, string[]? args = null, string? workingDirectory = null)
    {
        // By default an empty directory of its own, as a supervisor's working directory would be.
        var cwd = workingDirectory ?? Directory.CreateTempSubdirectory("ledger-start-").FullName;
        try
        {
            using var ledger = Start(env, args ?? ["--urls", "http://127.0.0.1:0"], cwd);
            return ledger.WaitForExit(TimeSpan.FromSeconds(90));
        }
        finally
        {
            if (workingDirectory is null) Directory.Delete(cwd, recursive: true);
        }
    }

    public async Task<string> WaitForAddress(TimeSpan limit)
    {
        var exited = _process.WaitForExitAsync();
        var first = await Task.WhenAny(_address.Task, exited, Task.Delay(limit));
        Assert.True(first == _address.Task, $"the service did not start listening:\n{Output().All}");
        return await _address.Task;
    }

    public Result Terminate(TimeSpan limit)
    {
        Signal();
        return WaitForExit(limit);
    }

    /// <summary>Sends SIGTERM, as a supervisor stopping the service does, without waiting for the exit.</summary>
    public void Signal()
    {
        using var kill = Process.Start("kill", ["-TERM", _process.Id.ToString()])!;
        kill.WaitForExit();
    }

    /// <summary>SIGKILL, as a crash or an OOM kill would end it: no shutdown code runs, its connections just close.</summary>
    public void KillHard()
    {
        _process.Kill();
        _process.WaitForExit();
    }

    /// <summary>What the process printed on standard output so far.</summary>
    public string Stdout
    {
        get { lock (_stdout) return _stdout.ToString(); }
    }

    public Result WaitForExit(TimeSpan limit)
    {
        if (!_process.WaitForExit(limit))
        {
            _process.Kill(entireProcessTree: true);
            Assert.Fail($"the process did not end within {limit.TotalSeconds:0}s:\n{Output().All}");
        }
        _process.WaitForExit(); // drains the redirected output
        return Output() with { ExitCode = _process.ExitCode };
    }

    private Result Output()
    {
        lock (_stdout) lock (_stderr) return new Result(-1, _stdout.ToString(), _stderr.ToString());
    }

    public void Dispose()
    {
        if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        _process.Dispose();
    }

    internal static string DotnetHost()
    {
        var host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        if (!string.IsNullOrEmpty(host) && File.Exists(host)) return host;
        var self = Environment.ProcessPath;
        return self is not null && Path.GetFileNameWithoutExtension(self) == "dotnet" ? self : "dotnet";
    }

    internal sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public string All => $"exit {ExitCode}\n--- stdout\n{Stdout}--- stderr\n{Stderr}";

        public string[] StderrLines => Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

        /// <summary>No stack trace and no exception dump anywhere in what the process printed.</summary>
        public void AssertPlainRefusal()
        {
            Assert.DoesNotMatch(new Regex(@"^\s+at \S", RegexOptions.Multiline), Stdout + Stderr);
            Assert.DoesNotContain("Unhandled exception", All);
            Assert.DoesNotContain("Hosting failed to start", All);
            Assert.DoesNotContain("Exception:", All);
        }
    }
}

/// <summary>A data directory and port of the test's own for the private PostgreSQL; whatever runs there is stopped and removed at the end.</summary>
internal sealed class PrivateCluster : IDisposable
{
    public PrivateCluster()
    {
        DataDirectory = Path.Combine("/var/tmp", "run-ledger", $"startup-test-{Guid.NewGuid():N}");
        Port = TestPorts.Next();
    }

    public string DataDirectory { get; }
    public int Port { get; }

    public static bool Listening(int port)
    {
        try
        {
            using var client = new TcpClient();
            return client.ConnectAsync(IPAddress.Loopback, port).Wait(TimeSpan.FromSeconds(2)) && client.Connected;
        }
        catch (AggregateException)
        {
            return false;
        }
    }

    /// <summary>A port on 127.0.0.1 that nothing listens on.</summary>
    public static int ClosedPort() => TestPorts.Next();

    public void Dispose()
    {
        if (File.Exists(Path.Combine(DataDirectory, "postmaster.pid")))
        {
            // Only when a test failed: the service should have stopped it.
            var pgCtl = Directory.Exists("/usr/lib/postgresql")
                ? Directory.GetDirectories("/usr/lib/postgresql").Select(d => Path.Combine(d, "bin", "pg_ctl")).FirstOrDefault(File.Exists)
                : null;
            if (pgCtl is not null)
            {
                var asRoot = Environment.UserName == "root";
                using var stop = Process.Start(asRoot ? "runuser" : pgCtl,
                    asRoot ? ["-u", "postgres", "--", pgCtl, "-D", DataDirectory, "-m", "immediate", "-w", "stop"] : ["-D", DataDirectory, "-m", "immediate", "-w", "stop"]);
                stop.WaitForExit(30_000);
            }
        }
        try { Directory.Delete(DataDirectory, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        try { File.Delete(DataDirectory + ".lock"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        try { File.Delete(DataDirectory + ".password"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
