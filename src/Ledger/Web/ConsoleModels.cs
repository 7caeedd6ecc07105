using System.Text.Json;
using Ledger.Forensics;
using Ledger.Runs;

namespace Ledger.Web;

/// <summary>The /runs filters as the reader typed them (so the form shows them again) and the links that keep them.</summary>
public sealed record RunsQuery(string? Status, string? Board, string? Batch, string? Label, string? Anomaly, string? StuckFor,
    string? From, string? To, int PageSize)
{
    /// <summary>Whether any filter is set: an empty page then means "nothing matches", not "nothing yet".</summary>
    public bool Filtered => new[] { Status, Board, Batch, Label, Anomaly, StuckFor, From, To }.Any(v => !string.IsNullOrEmpty(v));

    public string Link(int page)
    {
        var values = new List<KeyValuePair<string, string?>>
        {
            new("status", Status), new("board", Board), new("batch", Batch), new("label", Label), new("anomaly", Anomaly),
            new("stuckFor", StuckFor), new("from", From), new("to", To),
        };
        values.RemoveAll(v => string.IsNullOrEmpty(v.Value));
        if (page > 1) values.Add(new("page", page.ToString()));
        if (PageSize != Ledger.Infrastructure.Paging.DefaultPageSize) values.Add(new("pageSize", PageSize.ToString()));
        return "/runs" + QueryString.Create(values);
    }
}

public sealed record RunsModel(RunsQuery Query, IReadOnlyList<Run> Runs, long Total, int Page, int PageSize,
    IReadOnlyDictionary<string, string[]>? Errors, DateTimeOffset Now, IReadOnlySet<string>? Archived = null);

public sealed record RunModel(
    Run Current,
    RunView Shown,
    long? AsOfVersion,
    DateTimeOffset? AsOfRecordedAt,
    IReadOnlyList<HistoryEntry> Events,
    long After,
    long? Next,
    IReadOnlyList<Rejection> Refusals,
    string? Notice,
    string? Error,
    bool Follow = false,
    long? ArchivedThrough = null);

public static partial class Show
{
    public static string Time(DateTimeOffset? t) => t is { } v ? v.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss.fff'Z'") : "–";

    /// <summary>A time in a table cell: to the second (<see cref="Time"/> in its title).</summary>
    public static string Short(DateTimeOffset? t) => t is { } v ? v.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss'Z'") : "–";

    /// <summary>"succeeded", or "succeeded (incomplete-results)" when there is a reason.</summary>
    public static string WithReason(string status, string? reason) => string.IsNullOrWhiteSpace(reason) ? status : $"{status} ({reason})";

    /// <summary>
    /// A detail the ledger wrote (anomalies, refusals) as a person reads it: the ISO 8601 times it
    /// carries for machines (<c>2026-12-06T04:49:02.0140000+00:00</c>) as <see cref="Time"/> does,
    /// and a delay in whole seconds as a duration (<c>arrived 0s after</c>: less than a second).
    /// The API keeps the text as recorded.
    /// </summary>
    public static string Detail(string? text)
    {
        if (string.IsNullOrEmpty(text)) return "";
        var times = IsoTime().Replace(text, m => DateTimeOffset.TryParse(m.Value, System.Globalization.CultureInfo.InvariantCulture,
            System.Globalization.DateTimeStyles.AssumeUniversal, out var t) ? Time(t) : m.Value);
        return Delay().Replace(times, m => Duration(long.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)));
    }

    private static string Duration(long seconds) => seconds switch
    {
        < 1 => "less than a second",
        < 120 => $"{seconds} s",
        < 7200 => seconds % 60 == 0 ? $"{seconds / 60} min" : $"{seconds / 60} min {seconds % 60} s",
        < 172_800 => seconds % 3600 / 60 == 0 ? $"{seconds / 3600} h" : $"{seconds / 3600} h {seconds % 3600 / 60} min",
        _ => $"{seconds / 86_400} days {seconds % 86_400 / 3600} h",
    };

    [System.Text.RegularExpressions.GeneratedRegex(@"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,7})?(?:Z|[+-]\d{2}:\d{2})")]
    private static partial System.Text.RegularExpressions.Regex IsoTime();

    [System.Text.RegularExpressions.GeneratedRegex(@"(?<=\barrived )(\d+)s\b")]
    private static partial System.Text.RegularExpressions.Regex Delay();

    public static string Wire<T>(T value) where T : struct, Enum => JsonNamingPolicy.KebabCaseLower.ConvertName(value.ToString());

    public static string Json(JsonElement data)
    {
        var text = JsonSerializer.Serialize(data, new JsonSerializerOptions { WriteIndented = true });
        return text.Length > 4000 ? text[..4000] + "\n…" : text;
    }

    public static string Ago(DateTimeOffset? t, DateTimeOffset now) => t is not { } v ? "–" : (now - v).TotalSeconds switch
    {
        < 0 => "just now",
        < 120 and var s => $"{s:0} s ago",
        < 7200 and var s => $"{s / 60:0} min ago",
        var s => $"{s / 3600:0.#} h ago",
    };
}
