using System.Text.Json;
using Ledger.Forensics;
using Ledger.Runs;

namespace Ledger.Web;

/// <summary>The /runs filters as the reader typed them (so the form shows them again) and the links that keep them.</summary>
public sealed record RunsQuery(string? Status, string? Board, string? Batch, string? Label, string? Anomaly, string? StuckFor,
    string? From, string? To, int PageSize)
{
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

public static class Show
{
    public static string Time(DateTimeOffset? t) => t is { } v ? v.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss.fff'Z'") : "–";

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
