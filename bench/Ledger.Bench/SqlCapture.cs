using Marten;
using Marten.Services;
using Npgsql;

namespace Ledger.Bench;

/// <summary>Records the SQL a Marten session sends: each command or batch is one round trip.</summary>
public sealed class SqlCapture(int maxLength = 110) : IMartenSessionLogger
{
    private static volatile SqlCapture? _current;

    /// <summary>Routes the sessions of every store configured with <see cref="StoreLogger"/> to this capture until disposed.</summary>
    public static IDisposable Capturing(SqlCapture capture)
    {
        _current = capture;
        return new Release();
    }

    private sealed class Release : IDisposable
    {
        public void Dispose() => _current = null;
    }

    /// <summary>A store-level logger: the sessions a writer opens on its own are captured while <see cref="Capturing"/> is on.</summary>
    public static readonly IMartenLogger StoreLogger = new Router();

    private sealed class Router : IMartenLogger
    {
        // Outside a capture each session gets a throwaway one, collected with the session.
        public IMartenSessionLogger StartSession(IQuerySession session) => _current ?? new SqlCapture();
        public void SchemaChange(string sql) { }
    }

    public List<string> RoundTrips { get; } = [];

    public void OnBeforeExecute(NpgsqlCommand command) =>
        RoundTrips.Add(Shorten(command.CommandText));

    public void OnBeforeExecute(NpgsqlBatch batch) =>
        RoundTrips.Add($"batch of {batch.BatchCommands.Count}: " +
                       string.Join(" | ", batch.BatchCommands.Cast<NpgsqlBatchCommand>().Select(c => Shorten(c.CommandText))));

    public void LogSuccess(NpgsqlCommand command) { }
    public void LogFailure(NpgsqlCommand command, Exception ex) { }
    public void LogSuccess(NpgsqlBatch batch) { }
    public void LogFailure(NpgsqlBatch batch, Exception ex) { }
    public void LogFailure(Exception ex, string message) { }
    public void RecordSavedChanges(IDocumentSession session, IChangeSet commit) { }

    private string Shorten(string sql)
    {
        var flat = string.Join(' ', sql.Split((char[])['\n', '\r', '\t', ' '], StringSplitOptions.RemoveEmptyEntries));
        return flat.Length <= maxLength ? flat : flat[..maxLength] + "…";
    }
}
