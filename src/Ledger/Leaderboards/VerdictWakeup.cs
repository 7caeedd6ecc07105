using System.Diagnostics;
using JasperFx.Events.Daemon.HighWater;
using Ledger.Runs;
using Marten;
using Npgsql;

namespace Ledger.Leaderboards;

/// <summary>
/// Brings a new verdict to the boards without waiting for the projection leader's next poll
/// (<c>Ledger:Projections:WakeOnVerdict</c>). Every transaction that appends a ranked verdict also
/// sends <c>NOTIFY ledger_verdicts</c> (<see cref="VerdictNotifier"/>), from whichever node; the
/// leader LISTENs for it here and looks for new events at once. Only verdicts notify, not every
/// append: waking on every append (Marten's <c>UseListenNotifyForEventAppends</c>) cost 30 % of
/// single-event ingestion and doubled PostgreSQL's CPU per event in the bench, because each
/// notification makes the leader poll. For the same reason wakes are at least
/// <see cref="MinimumInterval"/> apart: under 200 verdicts a second the leader polls about 10
/// times a second, not 200.
/// A notification that comes while the leader is polling is kept for its next wait (none is
/// lost), and a lost LISTEN connection is opened again on the next wait, which then does not
/// block: notifications may have been missed meanwhile. Polling stays on as the safety net.
/// </summary>
public sealed class VerdictWakeup(string connectionString, TimeSpan minimumInterval, ILogger<VerdictWakeup> logger) : IDaemonWakeup, IDisposable
{
    public const string Channel = "ledger_verdicts";

    public TimeSpan MinimumInterval { get; } = minimumInterval;

    private readonly SemaphoreSlim _signal = new(0, 1);
    private readonly SemaphoreSlim _opening = new(1, 1);
    private readonly CancellationTokenSource _lifetime = new();
    private NpgsqlConnection? _connection;
    private Task _receiving = Task.CompletedTask;
    private long _lastWake = Stopwatch.GetTimestamp();

    public async Task WaitAsync(TimeSpan timeout, CancellationToken token)
    {
        var listening = await Listen(token);
        if (listening) await _signal.WaitAsync(timeout, token);
        else if (_connection is null) await Task.Delay(timeout, token);

        // Paced: a burst of verdicts wakes the leader once per interval, with all of them.
        var since = Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastWake));
        if (since < MinimumInterval) await Task.Delay(MinimumInterval - since, token);
        Interlocked.Exchange(ref _lastWake, Stopwatch.GetTimestamp());
    }

    /// <summary>True when already listening; false when it just started to (or could not): then the caller does not wait.</summary>
    private async Task<bool> Listen(CancellationToken token)
    {
        if (_connection is not null) return true;
        await _opening.WaitAsync(token);
        try
        {
            if (_connection is not null) return true;
            var connection = new NpgsqlConnection(connectionString);
            try
            {
                await connection.OpenAsync(token);
                connection.Notification += (_, _) => Signal();
                await using (var listen = new NpgsqlCommand($"LISTEN {Channel}", connection)) await listen.ExecuteNonQueryAsync(token);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                await connection.DisposeAsync();
                logger.LogWarning("Cannot LISTEN for new verdicts ({Reason}); the projections find them by polling until the database answers again", e.Message);
                return false;
            }
            _connection = connection;
            _receiving = Task.Run(() => Receive(connection));
            logger.LogInformation("Listening on PostgreSQL channel {Channel}: a new verdict wakes the standings projection", Channel);
            return false;
        }
        finally
        {
            _opening.Release();
        }
    }

    private async Task Receive(NpgsqlConnection connection)
    {
        try
        {
            while (!_lifetime.IsCancellationRequested) await connection.WaitAsync(_lifetime.Token);
        }
        catch (Exception) when (_lifetime.IsCancellationRequested)
        {
            // Stopping.
        }
        catch (Exception e) when (!_lifetime.IsCancellationRequested)
        {
            // A database restart or a dropped connection is expected now and then: one line, no stack trace.
            logger.LogWarning("The LISTEN connection for new verdicts was lost ({Reason}); it is opened again on the next poll",
                e is PostgresException p ? $"{p.SqlState}: {p.MessageText}" : e.Message);
            _connection = null;
            Signal();
            await connection.DisposeAsync();
        }
    }

    private void Signal()
    {
        try
        {
            if (_signal.CurrentCount == 0) _signal.Release();
        }
        catch (SemaphoreFullException)
        {
        }
        catch (ObjectDisposedException)
        {
        }
    }

    /// <summary>
    /// Closes the LISTEN connection for good. Called at shutdown before the private PostgreSQL is
    /// stopped, so that stopping it terminates no connection of ours (no 57P01 in the log).
    /// </summary>
    public void Stop()
    {
        if (_lifetime.IsCancellationRequested) return;
        _lifetime.Cancel();
        // The connection is in use while it waits for notifications: it is closed once that wait ends.
        try { _receiving.Wait(TimeSpan.FromSeconds(2)); } catch (AggregateException) { }
        try { _connection?.Dispose(); } catch (NpgsqlException) { } catch (InvalidOperationException) { }
        _connection = null;
    }

    public void Dispose()
    {
        Stop();
        _lifetime.Dispose();
    }
}

/// <summary>Sends <c>NOTIFY ledger_verdicts</c> in every transaction that appends a ranked verdict (see <see cref="VerdictWakeup"/>).</summary>
public sealed class VerdictNotifier : DocumentSessionListenerBase
{
    public override Task BeforeSaveChangesAsync(IDocumentSession session, CancellationToken token)
    {
        foreach (var stream in session.PendingChanges.Streams())
        {
            if (stream.Events.Any(e => e.Data is VerdictReached verdict && Standing.Ranks(verdict)))
            {
                session.QueueSqlCommand($"select pg_notify('{VerdictWakeup.Channel}', '')");
                break;
            }
        }
        return Task.CompletedTask;
    }
}
