using System.Globalization;
using Ledger.Contract;
using Ledger.Infrastructure;
using Ledger.Labels;
using Marten;
using Marten.Pagination;

namespace Ledger.Runs;

/// <summary>
/// The runs a reader asks for: one parser and one query for <c>GET /api/runs</c> and the
/// console's <c>/runs</c>, so both answer the same question the same way. Every filter is an
/// equality or a range on an indexed field of the run document (no scan of the runs).
/// </summary>
public sealed record RunFilter
{
    public RunStatus? Status { get; init; }
    public string? Board { get; init; }
    public string? Participant { get; init; }
    public string? Batch { get; init; }
    public string? Anomaly { get; init; }
    /// <summary>A label as <c>key:value</c> (the value normalized through the alias table, as at registration).</summary>
    public (string Key, string Value)? Label { get; init; }
    /// <summary>Registered at or after.</summary>
    public DateTimeOffset? From { get; init; }
    /// <summary>Registered before.</summary>
    public DateTimeOffset? To { get; init; }
    /// <summary>Claimed or running, and no heartbeat (nor claim) for at least this many seconds.</summary>
    public long? StuckForSeconds { get; init; }

    public const long MaxStuckForSeconds = 10L * 366 * 24 * 3600;

    /// <summary>The filter from query values, or the 422 naming each value that is not one.</summary>
    public static (RunFilter? Filter, Problem? Refusal) Parse(string? status, string? board, string? participant, string? batch,
        string? anomaly, string? label, string? from, string? to, string? stuckFor, LabelVocabulary vocabulary)
    {
        var errors = new Dictionary<string, string[]>();
        RunStatus? wanted = null;
        if (!string.IsNullOrEmpty(status))
        {
            if (!Enum.TryParse<RunStatus>(status, ignoreCase: true, out var parsed) || int.TryParse(status, out _))
                errors["status"] = [$"Unknown status; allowed: {string.Join(", ", RunStatusRules.WireNames)}."];
            else wanted = parsed;
        }
        (string, string)? labelFilter = null;
        if (!string.IsNullOrEmpty(label))
        {
            var colon = label.IndexOf(':');
            if (colon <= 0 || colon == label.Length - 1) errors["label"] = ["A label as key:value, e.g. region:EU."];
            else
            {
                var key = label[..colon].Trim();
                labelFilter = (key, vocabulary.Normalize(key, label[(colon + 1)..].Trim()).Value);
            }
        }
        DateTimeOffset? fromTime = null, toTime = null;
        if (!string.IsNullOrEmpty(from) && !TryTime(from, out fromTime)) errors["from"] = ["An ISO 8601 time is required."];
        if (!string.IsNullOrEmpty(to) && !TryTime(to, out toTime)) errors["to"] = ["An ISO 8601 time is required."];
        long? stuck = null;
        if (!string.IsNullOrEmpty(stuckFor))
        {
            if (!long.TryParse(stuckFor, NumberStyles.None, CultureInfo.InvariantCulture, out var seconds) || seconds < 1 || seconds > MaxStuckForSeconds)
                errors["stuckFor"] = [$"A number of seconds, 1 to {MaxStuckForSeconds}."];
            else stuck = seconds;
        }
        if (errors.Count > 0) return (null, RequestBody.Invalid(errors));
        return (new RunFilter
        {
            Status = wanted, Board = Blank(board), Participant = Blank(participant), Batch = Blank(batch), Anomaly = Blank(anomaly),
            Label = labelFilter, From = fromTime, To = toTime, StuckForSeconds = stuck,
        }, null);
    }

    private static string? Blank(string? value) => string.IsNullOrEmpty(value) ? null : value;

    private static bool TryTime(string value, out DateTimeOffset? time) =>
        QueryValues.TryTime(value, "", out time, out _) && time is not null;

    public IQueryable<Run> Apply(IQueryable<Run> query, DateTimeOffset now)
    {
        if (Status is { } s) query = query.Where(r => r.Status == s);
        if (Board is { } board) query = query.Where(r => r.Board == board);
        if (Participant is { } participant) query = query.Where(r => r.Participant == participant);
        if (Batch is { } batch) query = query.Where(r => r.Batch == batch);
        if (Anomaly is { } anomaly) query = query.Where(r => r.Anomalies.Any(a => a.Kind == anomaly));
        if (Label is var (key, value)) query = query.Where(r => r.Labels[key] == value);
        if (From is { } from) query = query.Where(r => r.RegisteredAt >= from);
        if (To is { } to) query = query.Where(r => r.RegisteredAt < to);
        if (StuckForSeconds is { } seconds)
        {
            // Lost is decided by the janitor; until then a silent lease holder is stuck.
            var since = now.AddSeconds(-seconds);
            var live = RunStatusSets.Live.ToArray();
            query = query.Where(r => r.Status.IsOneOf(live) && r.LastHeartbeatAt <= since);
        }
        return query;
    }

    public async Task<RunPage> PageAsync(IQuerySession session, DateTimeOffset now, int page, int pageSize, CancellationToken ct)
    {
        var runs = await Apply(session.Query<Run>(), now)
            .OrderByDescending(r => r.RegisteredAt).ThenBy(r => r.Id).ToPagedListAsync(page, pageSize, ct);
        var items = runs.Select(RunSummary.From).ToList();
        return new RunPage(items, page, pageSize, runs.TotalItemCount);
    }
}
