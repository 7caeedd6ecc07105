using Ledger.Infrastructure;
using Npgsql;

namespace Ledger.Tests.Infrastructure;

/// <summary>The self-starting database the service falls back to, on the machine's real binaries.</summary>
public sealed class EmbeddedPostgresTests
{
    [Fact]
    public void it_provisions_a_cluster_reuses_it_and_keeps_data_across_a_clean_stop()
    {
        var dir = Path.Combine("/var/tmp", "run-ledger", $"embedded-test-{Guid.NewGuid():N}");
        var options = new EmbeddedPostgresOptions { DataDirectory = dir, Port = 55000 + Random.Shared.Next(0, 900), Database = "ledger_embedded" };
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
            NpgsqlConnection.ClearAllPools();
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            try { File.Delete(dir + ".lock"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
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
