using System.Collections.Concurrent;
using System.Diagnostics;
using Alba;
using Ledger.Runs;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Npgsql;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Fixtures;

/// <summary>
/// A row lock on one run's row (its stream row in <c>mt_streams</c>, or its document in
/// <c>mt_doc_run</c>), held in the test's own transaction: whatever the writer does that must lock
/// that row waits until the lock is released, and everything queued behind it waits too. The test
/// knows when the writer waits by asking PostgreSQL (<see cref="WaitForWaiter"/>), not a clock.
/// The stream row is locked by every group that appends to the run (when it reads or when it
/// commits); the document row only by the commit (the inline projection's upsert).
/// </summary>
public sealed class RowLock : IAsyncDisposable
{
    private readonly NpgsqlConnection _connection;
    private NpgsqlTransaction? _transaction;

    private RowLock(NpgsqlConnection connection, NpgsqlTransaction transaction, int pid)
    {
        _connection = connection;
        _transaction = transaction;
        Pid = pid;
    }

    /// <summary>The backend holding the lock.</summary>
    public int Pid { get; }

    /// <summary>Locks the run's stream row.</summary>
    public static Task<RowLock> Stream(string connectionString, string runId, string schema = "ledger") =>
        Hold(connectionString, $"{schema}.mt_streams", runId);

    /// <summary>Locks the run's document (the state the writer reads without locking and upserts when it commits).</summary>
    public static Task<RowLock> RunDocument(string connectionString, string runId, string schema = "ledger") =>
        Hold(connectionString, $"{schema}.mt_doc_run", runId);

    private static async Task<RowLock> Hold(string connectionString, string table, string runId)
    {
        // A connection of its own, outside any pool the ledger uses, so clearing pools never touches it.
        var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false }.ConnectionString);
        await connection.OpenAsync();
        var transaction = await connection.BeginTransactionAsync();
        await using var select = new NpgsqlCommand($"select pg_backend_pid(), (select id from {table} where id = @id for update)", connection, transaction);
        select.Parameters.AddWithValue("id", runId);
        await using var reader = await select.ExecuteReaderAsync();
        await reader.ReadAsync();
        var pid = reader.GetInt32(0);
        Assert.False(await reader.IsDBNullAsync(1), $"no row for run {runId} in {table}");
        return new RowLock(connection, transaction, pid);
    }

    /// <summary>The backends waiting for this lock (their transaction is under way and cannot finish).</summary>
    public async Task<int[]> Waiters()
    {
        await using var conn = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(_connection.ConnectionString) { Pooling = false }.ConnectionString);
        await conn.OpenAsync();
        await using var query = new NpgsqlCommand("select pid from pg_stat_activity where @holder = any(pg_blocking_pids(pid))", conn);
        query.Parameters.AddWithValue("holder", Pid);
        var pids = new List<int>();
        await using var reader = await query.ExecuteReaderAsync();
        while (await reader.ReadAsync()) pids.Add(reader.GetInt32(0));
        return pids.ToArray();
    }

    /// <summary>Waits until some backend waits for this lock, and returns it.</summary>
    public async Task<int> WaitForWaiter(TimeSpan? timeout = null)
    {
        var pid = 0;
        await Wait.Until(async () => (pid = (await Waiters()).FirstOrDefault()) != 0, timeout ?? TimeSpan.FromSeconds(30),
            "the writer to wait for the test's row lock");
        return pid;
    }

    public async Task Release()
    {
        if (_transaction is null) return;
        await _transaction.RollbackAsync();
        await _transaction.DisposeAsync();
        _transaction = null;
    }

    public async ValueTask DisposeAsync()
    {
        try { await Release(); }
        catch (NpgsqlException) { }
        await _connection.DisposeAsync();
    }
}

public static class Wait
{
    /// <summary>Polls until the condition holds; fails the test, naming what it waited for, after the timeout.</summary>
    public static Task Until(Func<Task<bool>> condition, TimeSpan timeout, string what) => Until(condition, timeout, () => what);

    /// <summary>As above, with what it waited for told when it fails (so it can say what was seen by then).</summary>
    public static async Task Until(Func<Task<bool>> condition, TimeSpan timeout, Func<string> what)
    {
        var clock = Stopwatch.StartNew();
        while (!await condition())
        {
            if (clock.Elapsed > timeout) Assert.Fail($"waited {timeout.TotalSeconds:0}s for {what()}");
            await Task.Delay(20);
        }
    }

    public static Task Until(Func<bool> condition, TimeSpan timeout, string what) =>
        Until(() => Task.FromResult(condition()), timeout, what);

    public static Task Until(Func<bool> condition, TimeSpan timeout, Func<string> what) =>
        Until(() => Task.FromResult(condition()), timeout, what);

    /// <summary>Waits until the instance's writer holds exactly <paramref name="count"/> queued commands.</summary>
    public static Task ForQueued(IAlbaHost instance, int count, TimeSpan? timeout = null)
    {
        var writer = instance.Services.GetRequiredService<RunWriter>();
        return Until(() => writer.Queued == count, timeout ?? TimeSpan.FromSeconds(30),
            $"{count} commands queued in the writer (now {writer.Queued})");
    }
}

/// <summary>Direct reads of a ledger database: what is really in the streams and the recorded keys.</summary>
public sealed class LedgerSql(string connectionString, string schema = "ledger")
{
    public async Task<T> Scalar<T>(string sql, params (string Name, object Value)[] parameters)
    {
        await using var conn = new NpgsqlConnection(connectionString);
        await conn.OpenAsync();
        await using var command = new NpgsqlCommand(sql.Replace("{schema}", schema), conn);
        foreach (var (name, value) in parameters) command.Parameters.AddWithValue(name, value);
        return (T)Convert.ChangeType((await command.ExecuteScalarAsync())!, typeof(T));
    }

    public Task<int> Execute(string sql, params (string Name, object Value)[] parameters) => Scalar<int>(
        $"with done as ({sql} returning 1) select count(*)::int from done", parameters);

    /// <summary>How many times the run's stream holds an event with this eventId.</summary>
    public Task<long> Count(string runId, string eventId) => Scalar<long>(
        "select count(*) from {schema}.mt_events where stream_id = @run and data ->> 'eventId' = @event", ("run", runId), ("event", eventId));

    /// <summary>Every eventId in the run's stream, in order (registration and claims have none).</summary>
    public async Task<List<string>> EventIds(string runId)
    {
        await using var conn = new NpgsqlConnection(connectionString);
        await conn.OpenAsync();
        await using var command = new NpgsqlCommand(
            $"select data ->> 'eventId' from {schema}.mt_events where stream_id = @run and data ? 'eventId' order by seq_id", conn);
        command.Parameters.AddWithValue("run", runId);
        var ids = new List<string>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync()) ids.Add(reader.GetString(0));
        return ids;
    }

    public Task<long> Version(string runId) => Scalar<long>(
        "select coalesce((select version from {schema}.mt_streams where id = @run), 0)", ("run", runId));
}

/// <summary>
/// Which streams each SaveChanges of an instance appended to: one entry per transaction, so a
/// test can see which runs the writer committed together. Added with
/// <c>services.ConfigureMarten(o =&gt; o.Listeners.Add(watch))</c>.
/// </summary>
public sealed class CommitWatch : DocumentSessionListenerBase
{
    private readonly ConcurrentQueue<IReadOnlySet<string>> _transactions = new();

    public IReadOnlyList<IReadOnlySet<string>> Transactions => _transactions.ToList();

    public override Task BeforeSaveChangesAsync(IDocumentSession session, CancellationToken token)
    {
        var streams = session.PendingChanges.Streams().Where(s => s.Events.Count > 0).Select(s => s.Key!).ToHashSet(StringComparer.Ordinal);
        if (streams.Count > 0) _transactions.Enqueue(streams);
        return Task.CompletedTask;
    }
}

/// <summary>Every log line of an instance, kept for the test to search. Added with <c>services.AddSingleton&lt;ILoggerProvider&gt;(logs)</c>.</summary>
public sealed class CapturedLogs : ILoggerProvider
{
    private readonly ConcurrentQueue<(string Category, LogLevel Level, string Text)> _lines = new();

    public IReadOnlyList<(string Category, LogLevel Level, string Text)> Lines => _lines.ToList();

    public ILogger CreateLogger(string categoryName) => new Logger(categoryName, _lines);

    public void Dispose() { }

    private sealed class Logger(string category, ConcurrentQueue<(string, LogLevel, string)> lines) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var text = formatter(state, exception);
            // The exception chain too: a SQL state (40P01) is in the inner exceptions' messages.
            for (var e = exception; e is not null; e = e.InnerException) text += $" | {e.GetType().Name}: {e.Message}";
            lines.Enqueue((category, logLevel, text));
        }
    }
}

/// <summary>
/// A writer that takes one command at a time into a queue of one, blocked: the first command's
/// commit waits for a row lock the test holds, the second fills the queue. Any further command
/// is refused at once with 503 overloaded until <see cref="Release"/>.
/// </summary>
public sealed class FullQueue : IAsyncDisposable
{
    public static readonly IReadOnlyDictionary<string, string> Settings = new Dictionary<string, string>
    {
        ["Ledger:Writer:QueueCapacity"] = "1",
        ["Ledger:Writer:MaxGroupSize"] = "1",
    };

    private readonly RowLock _lock;

    private FullQueue(RowLock hold, Task<Response> blocked, Task<Response> queued)
    {
        _lock = hold;
        Blocked = blocked;
        Queued = queued;
    }

    /// <summary>The command whose commit waits for the lock, and the one waiting in the queue.</summary>
    public Task<Response> Blocked { get; }
    public Task<Response> Queued { get; }

    /// <summary>Blocks the writer of <paramref name="instance"/> (started with <see cref="Settings"/>) and fills its queue.</summary>
    public static async Task<FullQueue> Make(LedgerHost ledger, IAlbaHost instance)
    {
        var api = new Scenarios(ledger, instance);
        var (blockedRun, blockedToken) = await api.Started();
        var (queuedRun, queuedToken) = await api.Started();
        var hold = await RowLock.Stream(ledger.ConnectionString, blockedRun);
        var blocked = api.Events(blockedRun, blockedToken, Event("heartbeat"));
        await hold.WaitForWaiter();
        var queued = api.Events(queuedRun, queuedToken, Event("heartbeat"));
        await Wait.ForQueued(instance, 1);
        return new FullQueue(hold, blocked, queued);
    }

    public Task Release() => _lock.Release();

    public ValueTask DisposeAsync() => _lock.DisposeAsync();
}
