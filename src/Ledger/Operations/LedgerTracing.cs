using System.Diagnostics;

namespace Ledger.Operations;

/// <summary>
/// The ledger's own spans (ActivitySource <see cref="SourceName"/>), beside those ASP.NET Core, Npgsql,
/// Marten and Wolverine emit. A request's trace holds its validation; the run writer's group (read,
/// decide, commit, and the Npgsql commands under them) serves many requests at once, so its span is a
/// child of the first request's span and links to every request it answers.
/// </summary>
public static class LedgerTracing
{
    public const string SourceName = "RunLedger";

    public static readonly ActivitySource Source = new(SourceName);

    /// <summary>The span of one writer group: parent the first caller, linked to each caller.</summary>
    public static Activity? Group(int runs, IEnumerable<ActivityContext> callers)
    {
        if (!Source.HasListeners()) return null;
        var contexts = callers.Where(c => c != default).Distinct().ToList();
        var activity = Source.StartActivity("ledger.writer.group", ActivityKind.Internal,
            contexts.Count > 0 ? contexts[0] : default,
            links: contexts.Select(c => new ActivityLink(c)));
        activity?.SetTag("ledger.group.requests", contexts.Count);
        activity?.SetTag("ledger.group.runs", runs);
        return activity;
    }

    /// <summary>A step inside the current span (a writer step, or the events endpoint's validation).</summary>
    public static Activity? Step(string name, string? runId = null)
    {
        var activity = Source.StartActivity(name);
        if (runId is not null) activity?.SetTag("ledger.run_id", runId);
        return activity;
    }
}
