using System.Text.Json;
using JasperFx.CommandLine;
using JasperFx.Events;
using Ledger.Infrastructure;
using Ledger.Retention;
using Ledger.Runs;
using Marten;
using Microsoft.Extensions.Options;

namespace Ledger.Forensics;

public sealed class VerifyInput : NetCoreInput;

[Description("Rebuild every projection from the events alone into a scratch schema and compare it with the live one", Name = "verify")]
public sealed class VerifyCommand : JasperFxAsyncCommand<VerifyInput>
{
    public override async Task<bool> Execute(VerifyInput input)
    {
        using var host = input.BuildHost();
        var report = await LongWork.RunAsync("verify", host.Services.GetRequiredService<IOptions<ProgressOptions>>().Value,
            progress => host.Services.GetRequiredService<ProjectionVerifier>().VerifyAsync(CancellationToken.None, progress));
        Console.WriteLine($"verify: {report.Events} events in {report.Streams} run streams; rebuilt " +
                          string.Join(", ", report.Documents.Select(d => $"{d.Value} {d.Key}")));
        foreach (var difference in report.Differences) Console.WriteLine($"DIFFERENCE {difference}");
        Console.WriteLine(report.Passed ? "verify: passed, every projection equals its rebuild" : $"verify: FAILED with {report.Differences.Count} differences");
        return report.Passed;
    }
}

public sealed class KpisInput : NetCoreInput
{
    [Description("check: compare the kept KPI counters with a recount of the stored rows; rebuild: replace them with the recount")]
    public string Action { get; set; } = "check";
}

[Description("Check the kept KPI counters against a recount of the stored data (kpis check), or re-establish them from it (kpis rebuild)", Name = "kpis")]
public sealed class KpisCommand : JasperFxAsyncCommand<KpisInput>
{
    public override async Task<bool> Execute(KpisInput input)
    {
        if (input.Action is not ("check" or "rebuild"))
        {
            Console.Error.WriteLine($"kpis: '{input.Action}' is neither check nor rebuild");
            return false;
        }
        using var host = input.BuildHost();
        await host.Services.GetRequiredService<IDocumentStore>().Storage.ApplyAllConfiguredChangesToDatabaseAsync();
        var kpis = host.Services.GetRequiredService<KpiStore>();
        if (input.Action == "rebuild")
        {
            var rebuilt = await kpis.RebuildAsync(once: false, CancellationToken.None);
            Console.WriteLine($"kpis: {rebuilt.Counters} counters recounted from {rebuilt.Runs} runs in {rebuilt.Took.TotalSeconds:0.0} s");
            return true;
        }
        var differences = await kpis.CompareAsync(null, CancellationToken.None);
        foreach (var difference in differences) Console.WriteLine($"DIFFERENCE {difference}");
        Console.WriteLine(differences.Count == 0 ? "kpis: every kept counter equals its recount" : $"kpis: {differences.Count} counters differ; `kpis rebuild` replaces them with the recount");
        return differences.Count == 0;
    }
}

public sealed class ExportInput : NetCoreInput
{
    [Description("Export the stream of this run")]
    [FlagAlias("run")]
    public string? RunFlag { get; set; }

    [Description("Export every event recorded at or after this time (ISO 8601), across runs")]
    [FlagAlias("since")]
    public string? SinceFlag { get; set; }

    [Description("Write to this file instead of standard output")]
    [FlagAlias("out")]
    public string? OutFlag { get; set; }
}

[Description("Export events as NDJSON: one run's stream (--run ID) or everything since a time (--since TIME)", Name = "export")]
public sealed class ExportCommand : JasperFxAsyncCommand<ExportInput>
{
    public override async Task<bool> Execute(ExportInput input)
    {
        if ((input.RunFlag is null) == (input.SinceFlag is null))
        {
            Console.Error.WriteLine("export: give exactly one of --run ID or --since TIME");
            return false;
        }
        DateTimeOffset since = default;
        if (input.SinceFlag is not null && !DateTimeOffset.TryParse(input.SinceFlag, System.Globalization.CultureInfo.InvariantCulture,
                System.Globalization.DateTimeStyles.AssumeUniversal, out since))
        {
            Console.Error.WriteLine($"export: '{input.SinceFlag}' is not an ISO 8601 time");
            return false;
        }

        using var host = input.BuildHost();
        var store = host.Services.GetRequiredService<IDocumentStore>();
        if (input.RunFlag is { } unknown && !await EventExport.RunExistsAsync(store, unknown, CancellationToken.None))
        {
            // Checked before the file is created: an unknown run leaves no empty file behind.
            Console.Error.WriteLine($"export: no run '{unknown}' in this ledger; nothing exported");
            return false;
        }

        // A relative --out is relative to the caller's working directory (dotnet run keeps it, see Ledger.csproj).
        var path = input.OutFlag is null ? null : Path.GetFullPath(input.OutFlag);
        long count;
        await using (var output = path is null ? Console.OpenStandardOutput() : File.Create(path))
        {
            var archives = host.Services.GetRequiredService<RunArchives>();
            count = input.RunFlag is { } runId
                ? await EventExport.WriteRunAsync(store, runId, output, CancellationToken.None, archives)
                : await LongWork.RunAsync("export", host.Services.GetRequiredService<IOptions<ProgressOptions>>().Value,
                    progress => EventExport.WriteSinceAsync(store, since, output, CancellationToken.None, archives, progress));
        }
        Console.Error.WriteLine(path is null ? $"export: {count} events" : $"export: {count} events written to {path}");
        return true;
    }
}

/// <summary>
/// Events as NDJSON, one object per line, in the wire format of the history endpoint. An archived
/// run's events come from its archive (with <paramref name="archives"/>), as they were before it.
/// </summary>
public static class EventExport
{
    public static async Task<bool> RunExistsAsync(IDocumentStore store, string runId, CancellationToken ct)
    {
        await using var session = store.QuerySession();
        return await session.Events.FetchStreamStateAsync(runId, ct) is not null;
    }

    public static async Task<long> WriteRunAsync(IDocumentStore store, string runId, Stream output, CancellationToken ct, RunArchives? archives = null)
    {
        await using var session = store.QuerySession();
        long count = 0, archived = 0;
        if (archives is not null && await ArchivedRunStore.LoadAsync(session, store.Options.DatabaseSchemaName, runId, ct) is { Archived: true } archive)
        {
            foreach (var e in ArchivedEvents.Of(archives, archive))
            {
                await WriteLine(output, runId, e, ct);
                count++;
            }
            archived = archive.ArchivedVersion;
        }
        var events = await session.Events.FetchStreamAsync(runId, token: ct);
        foreach (var e in events.Where(e => e.Version > archived))
        {
            await WriteLine(output, e, ct);
            count++;
        }
        return count;
    }

    public static async Task<long> WriteSinceAsync(IDocumentStore store, DateTimeOffset since, Stream output, CancellationToken ct,
        RunArchives? archives = null, ProgressReport? progress = null)
    {
        await using var session = store.QuerySession();
        // Archived runs' events come from their archives, merged in sequence order with the rest.
        var archivedRuns = archives is null
            ? new Dictionary<string, ArchivedRunRow>()
            : await ArchivedRunStore.AllArchivedAsync(session, store.Options.DatabaseSchemaName, ct);
        using var fromArchives = archives is null ? null
            : ArchivedEvents.Since(archives, archivedRuns.Values.Where(r => r.LastTimestamp >= since), since).GetEnumerator();
        var archivedNext = fromArchives?.MoveNext() == true;
        // The stage's total counts what the event store holds; an archived run's events add to it as they are read.
        var writing = progress?.Stage($"events recorded since {since.UtcDateTime:yyyy-MM-dd HH:mm:ss}Z",
            await session.Events.QueryAllRawEvents().Where(e => e.Timestamp >= since).CountAsync(ct));
        long count = 0, last = 0;
        while (true)
        {
            var from = last;
            // The database's recording timestamp is indexed with the sequence; the ledger's own recordedAt is in each line.
            var page = await session.Events.QueryAllRawEvents()
                .Where(e => e.Sequence > from && e.Timestamp >= since).OrderBy(e => e.Sequence).Take(5_000).ToListAsync(ct);
            foreach (var e in page)
            {
                while (archivedNext && fromArchives!.Current.Event.Sequence < e.Sequence)
                {
                    await WriteLine(output, fromArchives.Current.RunId, fromArchives.Current.Event, ct);
                    count++;
                    archivedNext = fromArchives.MoveNext();
                }
                // An archived run keeps its marker (and earlier verdicts) in place of events its archive holds.
                if (archivedRuns.TryGetValue(e.StreamKey!, out var run) && e.Version <= run.ArchivedVersion) continue;
                await WriteLine(output, e, ct);
                count++;
            }
            if (page.Count == 0)
            {
                while (archivedNext)
                {
                    await WriteLine(output, fromArchives!.Current.RunId, fromArchives.Current.Event, ct);
                    count++;
                    archivedNext = fromArchives.MoveNext();
                }
                writing?.Complete();
                return count;
            }
            last = page[^1].Sequence;
            writing?.Report(count);
        }
    }

    private static Task WriteLine(Stream output, IEvent e, CancellationToken ct) =>
        WriteLine(output, e.StreamKey!, new StoredEvent(e.Version, e.Sequence, e.Timestamp, e.Data), ct);

    private static async Task WriteLine(Stream output, string runId, StoredEvent e, CancellationToken ct)
    {
        var line = new
        {
            runId,
            sequence = e.Sequence,
            version = e.Version,
            type = EventNames.WireName(e.Data),
            recordedAt = e.RecordedAt,
            storedAt = e.Timestamp,
            data = JsonSerializer.SerializeToElement(e.Data, e.Data.GetType(), LedgerJson.Options),
        };
        await JsonSerializer.SerializeAsync(output, line, LedgerJson.Options, ct);
        output.WriteByte((byte)'\n');
    }
}
