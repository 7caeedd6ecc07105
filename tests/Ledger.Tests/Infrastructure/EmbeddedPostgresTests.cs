using System.Diagnostics;
using Ledger.Infrastructure;
using Npgsql;

namespace Ledger.Tests.Infrastructure;

/// <summary>The self-starting database the service falls back to, on the machine's real binaries.</summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class EmbeddedPostgresTests
{
    [Fact]
    public void it_provisions_a_cluster_reuses_it_and_keeps_data_across_a_clean_stop()
    {
        var dir = Path.Combine("/var/tmp", "run-ledger", $"embedded-test-{Guid.NewGuid():N}");
        var options = new EmbeddedPostgresOptions { DataDirectory = dir, Port = TestPorts.Next(), Database = "ledger_embedded" };
        var messages = new List<string>();
        var first = new EmbeddedPostgres(options, messages.Add);
        try
        {
            var connectionString = first.Start();
            Assert.True(first.StartedByUs);
            Assert.Contains(messages, m => m.Contains("Initialising") && m.Contains(dir));
            Execute(connectionString, "create table kept (v int); insert into kept values (42);");

            // A second process finds the running cluster and reuses it without owning it.
            var second = new EmbeddedPostgres(options, messages.Add);
            Assert.Equal(connectionString, second.Start());
            Assert.False(second.StartedByUs);

            first.Stop();
            NpgsqlConnection.ClearAllPools();

            // Started again from the same directory: no new initdb, the data is still there.
            messages.Clear();
            var third = new EmbeddedPostgres(options, messages.Add);
            var again = third.Start();
            Assert.DoesNotContain(messages, m => m.Contains("Initialising"));
            Assert.Equal(42, Scalar(again, "select v from kept"));
            third.Stop();
        }
        finally
        {
            first.Stop();
            Remove(options);
        }
    }

    [Fact]
    public void every_local_connection_needs_the_password_which_only_the_ledgers_user_can_read()
    {
        var options = NewOptions("password");
        var messages = new List<string>();
        var embedded = new EmbeddedPostgres(options, messages.Add);
        try
        {
            var connectionString = embedded.Start();
            var password = new NpgsqlConnectionStringBuilder(connectionString).Password;
            Assert.False(string.IsNullOrEmpty(password));
            Assert.True(password!.Length >= 40, "a generated password of 256 bits");
            Assert.Equal(1, Scalar(connectionString, "select 1"));

            // Without the password, or with a wrong one: over TCP and over the Unix socket alike.
            var tcp = new NpgsqlConnectionStringBuilder(connectionString) { Password = null, Pooling = false };
            var socket = new NpgsqlConnectionStringBuilder(tcp.ConnectionString) { Host = options.DataDirectory };
            var wrong = new NpgsqlConnectionStringBuilder(connectionString) { Password = password + "x", Pooling = false };
            Assert.ThrowsAny<NpgsqlException>(() => Scalar(tcp.ConnectionString, "select 1"));
            Assert.ThrowsAny<NpgsqlException>(() => Scalar(socket.ConnectionString, "select 1"));
            Assert.Equal("28P01", Assert.IsType<PostgresException>(Record.Exception(() => Scalar(wrong.ConnectionString, "select 1"))).SqlState);
            Assert.Equal(1, Scalar(new NpgsqlConnectionStringBuilder(socket.ConnectionString) { Password = password }.ConnectionString, "select 1"));

            // The password file: 0600, the ledger's user's own.
            var file = options.PasswordFilePath;
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file));
            Assert.Equal(Command("id", "-u").Output, Command("stat", "-c", "%u", file).Output);
            Assert.Equal(password, File.ReadAllText(file).Trim());
            if (Environment.UserName == "root")
            {
                // What the attack did: another local user, psql on 127.0.0.1 as the superuser.
                var psql = Command("runuser", "-u", "nobody", "--", Psql(), "-h", "127.0.0.1", "-p", options.Port.ToString(), "-U", "postgres", "-w", "-c", "select 1");
                Assert.NotEqual(0, psql.ExitCode);
                Assert.Contains("password", psql.Output);
                Assert.NotEqual(0, Command("runuser", "-u", "nobody", "--", "cat", file).ExitCode);
            }

            // Nowhere else: not in what was logged, not in any file of the data directory (server.log included).
            Assert.DoesNotContain(messages, m => m.Contains(password));
            var bytes = System.Text.Encoding.UTF8.GetBytes(password);
            foreach (var path in Directory.EnumerateFiles(options.DataDirectory, "*", SearchOption.AllDirectories))
            {
                byte[] content;
                try { content = File.ReadAllBytes(path); } catch (IOException) { continue; }
                Assert.True(content.AsSpan().IndexOf(bytes) < 0, $"the password is in {path}");
            }
            Assert.False(File.Exists(options.DataDirectory + ".initdb-password"));
        }
        finally
        {
            embedded.Stop();
            Remove(options);
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void a_cluster_made_with_trust_is_upgraded_to_a_password_at_start_and_the_upgrade_is_done_once(bool stillRunning)
    {
        var options = NewOptions("upgrade");
        // As clusters were made before passwords were required.
        var old = new EmbeddedPostgres(new EmbeddedPostgresOptions
        {
            DataDirectory = options.DataDirectory, Port = options.Port, Database = options.Database, TrustLocalConnections = true,
        }, _ => { });
        EmbeddedPostgres? upgraded = null;
        try
        {
            var before = old.Start();
            Assert.Null(new NpgsqlConnectionStringBuilder(before).Password);
            Execute(before, "create table kept (v int); insert into kept values (7);");
            Assert.False(File.Exists(options.PasswordFilePath));
            if (!stillRunning) old.Stop();
            NpgsqlConnection.ClearAllPools();

            var messages = new List<string>();
            upgraded = new EmbeddedPostgres(options, messages.Add);
            var after = upgraded.Start();
            Assert.Contains(messages, m => m.Contains("Upgraded the private PostgreSQL") && m.Contains(options.PasswordFilePath));
            var password = new NpgsqlConnectionStringBuilder(after).Password;
            Assert.False(string.IsNullOrEmpty(password));
            Assert.DoesNotContain(messages, m => m.Contains(password!));
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(options.PasswordFilePath));
            Assert.Equal(7, Scalar(after, "select v from kept"));
            Assert.ThrowsAny<NpgsqlException>(() => Scalar(new NpgsqlConnectionStringBuilder(after) { Password = null, Pooling = false }.ConnectionString, "select 1"));
            Assert.ThrowsAny<NpgsqlException>(() => Scalar(new NpgsqlConnectionStringBuilder(after) { Host = options.DataDirectory, Password = null, Pooling = false }.ConnectionString, "select 1"));
            Assert.DoesNotContain(File.ReadLines(Path.Combine(options.DataDirectory, "pg_hba.conf")), l => !l.TrimStart().StartsWith('#') && l.Contains("trust"));

            // Started again (running, then from cold): nothing more to upgrade, the same password.
            foreach (var cold in new[] { false, true })
            {
                if (cold) { upgraded.Stop(); old.Stop(); NpgsqlConnection.ClearAllPools(); }
                messages.Clear();
                var again = new EmbeddedPostgres(options, messages.Add);
                Assert.Equal(after, again.Start());
                Assert.DoesNotContain(messages, m => m.Contains("Upgraded"));
                Assert.Equal(7, Scalar(after, "select v from kept"));
                if (cold) upgraded = again;
            }

            // A password cluster whose password file is gone is refused in plain words, not opened.
            upgraded.Stop();
            old.Stop();
            File.Delete(options.PasswordFilePath);
            var orphan = Assert.Throws<EmbeddedPostgresUnavailableException>(() => new EmbeddedPostgres(options, _ => { }).Start());
            Assert.Contains(options.PasswordFilePath, orphan.Message);
            Assert.Contains("requires a password", orphan.Message);
        }
        finally
        {
            upgraded?.Stop();
            old.Stop();
            Remove(options);
        }
    }

    [Fact]
    public void without_binaries_it_refuses_naming_both_ways_out()
    {
        var embedded = new EmbeddedPostgres(new EmbeddedPostgresOptions { BinDirectory = "/nonexistent/bin" }, _ => { });
        var error = Assert.Throws<EmbeddedPostgresUnavailableException>(() => embedded.Start());
        Assert.Contains("ConnectionStrings__Ledger", error.Message);
        Assert.Contains("docker compose up -d", error.Message);
    }

    private static EmbeddedPostgresOptions NewOptions(string name) => new()
    {
        DataDirectory = Path.Combine("/var/tmp", "run-ledger", $"embedded-{name}-{Guid.NewGuid():N}"),
        Port = TestPorts.Next(),
        Database = "ledger_embedded",
    };


    /// <summary>The cluster's files, its start lock and its password file.</summary>
    private static void Remove(EmbeddedPostgresOptions options)
    {
        NpgsqlConnection.ClearAllPools();
        try { Directory.Delete(options.DataDirectory, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        foreach (var file in new[] { options.DataDirectory + ".lock", options.PasswordFilePath })
        {
            try { File.Delete(file); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    private static string Psql() =>
        Directory.GetDirectories("/usr/lib/postgresql").Select(d => Path.Combine(d, "bin", "psql")).FirstOrDefault(File.Exists) ?? "psql";

    private static (int ExitCode, string Output) Command(string file, params string[] arguments)
    {
        var psi = new ProcessStartInfo(file, arguments) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = "/" };
        using var process = Process.Start(psi)!;
        var output = process.StandardOutput.ReadToEnd() + process.StandardError.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, output.Trim());
    }

    private static void Execute(string connectionString, string sql)
    {
        using var conn = new NpgsqlConnection(connectionString);
        conn.Open();
        using var cmd = new NpgsqlCommand(sql, conn);
        cmd.ExecuteNonQuery();
    }

    private static int Scalar(string connectionString, string sql)
    {
        using var conn = new NpgsqlConnection(connectionString);
        conn.Open();
        using var cmd = new NpgsqlCommand(sql, conn);
        return (int)cmd.ExecuteScalar()!;
    }
}
