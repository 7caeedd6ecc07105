using System.Diagnostics;
using System.Text;
using Npgsql;
using NpgsqlTypes;

namespace Ledger.Bench;

/// <summary>
/// The physical limit: the same event payloads written with raw Npgsql into a plain table on the
/// same PostgreSQL, at the same concurrency, durability at its defaults (synchronous_commit on).
/// </summary>
public sealed class Baseline(BenchOptions options, NpgsqlDataSource dataSource)
{
    public const string Table = "bench_baseline.events";

    public async Task SetUpAsync()
    {
        await using var conn = await dataSource.OpenConnectionAsync();
        await using var cmd = new NpgsqlCommand($"""
            create schema if not exists bench_baseline;
            drop table if exists {Table};
            create table {Table} (
                id bigserial primary key,
                run_id text not null,
                event_id text not null,
                type text not null,
                body jsonb not null,
                recorded_at timestamptz not null default now());
            """, conn);
        await cmd.ExecuteNonQueryAsync();
    }

    /// <summary>One INSERT per event, each its own transaction (autocommit), prepared.</summary>
    public Task<Sample> SingleRowAsync(string tag, int concurrency, TimeSpan duration) =>
        Load.Run(concurrency, duration, async (worker, recorder, deadline) =>
        {
            await using var conn = await dataSource.OpenConnectionAsync();
            await using var cmd = new NpgsqlCommand($"insert into {Table} (run_id, event_id, type, body) values ($1, $2, $3, $4)", conn);
            cmd.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Text });
            cmd.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Text });
            cmd.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Text });
            cmd.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Jsonb });
            await cmd.PrepareAsync();
            for (var n = 0; DateTime.UtcNow < deadline; n++)
            {
                var script = Workload.SingleLifecycle($"{tag}-w{worker}-{n}");
                foreach (var e in script.Events)
                {
                    if (DateTime.UtcNow >= deadline) break;
                    var t = Stopwatch.GetTimestamp();
                    cmd.Parameters[0].Value = script.RunId;
                    cmd.Parameters[1].Value = e.EventId;
                    cmd.Parameters[2].Value = e.Type;
                    cmd.Parameters[3].Value = Encoding.UTF8.GetString(e.Json);
                    await cmd.ExecuteNonQueryAsync();
                    recorder.Add(t, 1);
                }
            }
        });

    /// <summary>One INSERT of <see cref="BenchOptions.BatchSize"/> rows per transaction, prepared.</summary>
    public Task<Sample> MultiRowAsync(string tag, int concurrency, TimeSpan duration) =>
        Load.Run(concurrency, duration, async (worker, recorder, deadline) =>
        {
            var size = options.BatchSize;
            var sql = new StringBuilder($"insert into {Table} (run_id, event_id, type, body) values ");
            for (var i = 0; i < size; i++)
            {
                if (i > 0) sql.Append(", ");
                sql.Append($"(${4 * i + 1}, ${4 * i + 2}, ${4 * i + 3}, ${4 * i + 4})");
            }
            await using var conn = await dataSource.OpenConnectionAsync();
            await using var cmd = new NpgsqlCommand(sql.ToString(), conn);
            for (var i = 0; i < size; i++)
            {
                cmd.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Text });
                cmd.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Text });
                cmd.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Text });
                cmd.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Jsonb });
            }
            await cmd.PrepareAsync();
            for (var n = 0; DateTime.UtcNow < deadline; n++)
            {
                var script = Workload.BatchLifecycle($"{tag}-w{worker}-{n}", options.BatchesPerRun, size);
                foreach (var batch in script.Batches(size))
                {
                    if (DateTime.UtcNow >= deadline) break;
                    if (batch.Length != size) throw new InvalidOperationException("batch lifecycles are whole batches");
                    var t = Stopwatch.GetTimestamp();
                    for (var i = 0; i < size; i++)
                    {
                        cmd.Parameters[4 * i].Value = script.RunId;
                        cmd.Parameters[4 * i + 1].Value = batch[i].EventId;
                        cmd.Parameters[4 * i + 2].Value = batch[i].Type;
                        cmd.Parameters[4 * i + 3].Value = Encoding.UTF8.GetString(batch[i].Json);
                    }
                    await cmd.ExecuteNonQueryAsync();
                    recorder.Add(t, size);
                }
            }
        });

    /// <summary>Binary COPY of <see cref="BenchOptions.BatchSize"/> rows per transaction.</summary>
    public Task<Sample> CopyAsync(string tag, int concurrency, TimeSpan duration) =>
        Load.Run(concurrency, duration, async (worker, recorder, deadline) =>
        {
            await using var conn = await dataSource.OpenConnectionAsync();
            for (var n = 0; DateTime.UtcNow < deadline; n++)
            {
                var script = Workload.BatchLifecycle($"{tag}-w{worker}-{n}", options.BatchesPerRun, options.BatchSize);
                foreach (var batch in script.Batches(options.BatchSize))
                {
                    if (DateTime.UtcNow >= deadline) break;
                    var t = Stopwatch.GetTimestamp();
                    await using (var writer = await conn.BeginBinaryImportAsync(
                                     $"copy {Table} (run_id, event_id, type, body) from stdin (format binary)"))
                    {
                        foreach (var e in batch)
                        {
                            await writer.StartRowAsync();
                            await writer.WriteAsync(script.RunId, NpgsqlDbType.Text);
                            await writer.WriteAsync(e.EventId, NpgsqlDbType.Text);
                            await writer.WriteAsync(e.Type, NpgsqlDbType.Text);
                            await writer.WriteAsync(Encoding.UTF8.GetString(e.Json), NpgsqlDbType.Jsonb);
                        }
                        await writer.CompleteAsync();
                    }
                    recorder.Add(t, batch.Length);
                }
            }
        });
}
