using System.Buffers.Binary;
using System.IO.Compression;
using System.Net;
using System.Text;
using System.Text.Json;
using Ledger.Retention;
using Ledger.Tests.Fixtures;
using Ledger.Tests.Operations;
using Microsoft.Extensions.DependencyInjection;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Retention;

/// <summary>
/// Retention's bad conditions: an archive directory that cannot be written or is full, an archive
/// removed or edited by hand, two nodes sweeping at once. In each, nothing is lost, the ledger
/// keeps taking events, and the failure is logged and counted.
/// </summary>
public sealed class RetentionFaultTests(RetentionHost host) : IClassFixture<RetentionHost>
{
    private readonly LedgerHost _ledger = host.Ledger;
    private readonly Scenarios _api = new(host.Ledger);

    private async Task<string> Board()
    {
        var board = NewRunId("board");
        Assert.Equal(HttpStatusCode.Created,
            (await _api.Send(HttpMethod.Post, "/api/boards", LedgerHost.AdminKey, new { id = board, primaryScore = "s", direction = "max" })).Status);
        return board;
    }

    private Task<long> EventsOf(string runId) => _ledger.Scalar("select count(*) from ledger.mt_events where stream_id = @id", ("id", runId));

    /// <summary>A node of the class's database whose archive settings are its own, its log kept.</summary>
    private async Task<(Alba.IAlbaHost Node, CapturedLogs Logs)> Node(Dictionary<string, string> settings)
    {
        var logs = new CapturedLogs();
        var node = await _ledger.SecondInstance(settings, s => s.AddSingleton<Microsoft.Extensions.Logging.ILoggerProvider>(logs));
        return (node, logs);
    }

    [Theory]
    [InlineData("directory-unwritable")]
    [InlineData("disk-full")]
    public async Task a_directory_that_cannot_take_the_archive_loses_nothing_and_the_failure_is_logged_and_counted(string reason)
    {
        var blocker = Path.GetTempFileName();
        try
        {
            // Unwritable: the directory lies under a regular file (root writes anywhere a mode allows; nothing creates a folder in a file).
            // Full: less room than the floor the policy keeps free.
            var settings = reason == "directory-unwritable"
                ? new Dictionary<string, string> { ["Ledger:Retention:Directory"] = Path.Combine(blocker, "archive") }
                : new Dictionary<string, string> { ["Ledger:Retention:MinFreeBytes"] = (long.MaxValue / 2).ToString() };
            var (node, logs) = await Node(settings);
            await using var _ = node;
            var board = await Board();
            var (runId, token) = await _api.Finished(board, "dora", 4);
            var rows = await _ledger.Rows(runId);
            await _ledger.Settled();
            _ledger.Clock.Advance(RetentionHost.Window + TimeSpan.FromMinutes(1));

            var sweeping = _ledger.RetentionSweep(node);
            // The ledger keeps taking events while the sweep fails.
            var (other, _) = await _api.Finished(board, "eve", 2);
            var report = (await sweeping).Archiving();

            Assert.True(report.Failures.GetValueOrDefault(reason) >= 1, $"failures: {string.Join(", ", report.Failures.Select(f => $"{f.Key} {f.Value}"))} {report.LastError}");
            Assert.Equal(0, report.Count("runs"));
            Assert.Equal(rows, await _ledger.Rows(runId));
            Assert.Equal(0, await _ledger.Scalar("select count(*) from ledger.ledger_archived_runs where run_id = @id", ("id", runId)));
            Assert.Equal("succeeded", (await _api.Run(other))["status"]!.GetValue<string>());
            Assert.True((await _api.History(runId)).Archived is null);
            Assert.Contains(logs.Lines, l => l.Level == Microsoft.Extensions.Logging.LogLevel.Warning && l.Text.Contains(runId) && l.Text.Contains(reason));
            Assert.DoesNotContain(logs.Lines, l => l.Level is Microsoft.Extensions.Logging.LogLevel.Error or Microsoft.Extensions.Logging.LogLevel.Critical);
            Assert.True((await Scrape.Of(node)).Value("ledger_retention_failures_total", ("reason", reason)) >= 1);

            var late = await _api.Events(runId, token, Event("heartbeat"));
            Assert.Equal("run-terminal", late.ProblemCode);
        }
        finally
        {
            File.Delete(blocker);
        }
    }

    [Fact]
    public async Task an_archive_removed_by_hand_leaves_the_run_answered_its_history_refused_naming_the_restore_and_verify_failing()
    {
        var board = await Board();
        var (runId, _) = await _api.Finished(board, "fay", 6, logs: 12);
        var history = await _api.History(runId);
        await _ledger.Settled();
        _ledger.Clock.Advance(RetentionHost.Window + TimeSpan.FromMinutes(1));
        await _ledger.RetentionSweep();
        var file = await BundleOf(runId);
        var kept = file + ".kept";
        File.Move(file, kept);
        try
        {
            Assert.Equal("succeeded", (await _api.Run(runId))["status"]!.GetValue<string>());
            var refused = await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/events", LedgerHost.ReadKey);
            Assert.Equal("run-archived", refused.ProblemCode);
            Assert.Equal(409, refused.Code);
            Assert.Contains($"/api/runs/{runId}/restore", refused.Json!["detail"]!.GetValue<string>());
            Assert.Equal("run-archived", (await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/state?version=2", LedgerHost.ReadKey)).ProblemCode);

            var restore = await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/restore", LedgerHost.AdminKey);
            Assert.Equal("archive-corrupt", restore.ProblemCode);
            Assert.Contains("missing", restore.Json!["detail"]!.GetValue<string>());
            Assert.Equal(1, await EventsOf(runId));

            var report = await _ledger.Verify();
            Assert.False(report.Passed);
            Assert.Contains(report.Differences, d => d.StartsWith($"archive/{runId}:", StringComparison.Ordinal) && d.Contains("missing"));
        }
        finally
        {
            File.Move(kept, file);
        }
        Assert.Equal(history.Events.ToJsonString(), (await _api.History(runId)).Events.ToJsonString());
        var again = await _ledger.Verify();
        Assert.True(again.Passed, string.Join("\n", again.Differences));
    }

    [Fact]
    public async Task an_archive_edited_by_hand_is_refused_everywhere_and_verify_names_the_run_and_the_first_bad_event()
    {
        var board = await Board();
        var (runId, _) = await _api.Finished(board, "gus", 6, logs: 14);
        var history = await _api.History(runId);
        await _ledger.Settled();
        _ledger.Clock.Advance(RetentionHost.Window + TimeSpan.FromMinutes(1));
        await _ledger.RetentionSweep();
        var file = await BundleOf(runId);
        var original = await File.ReadAllBytesAsync(file);
        var edited = history.Events.First(e => e!["type"]!.GetValue<string>() == "log" && e["data"]!["lines"]![0]!.GetValue<string>() == "line 7")!;
        var version = edited["version"]!.GetValue<long>();
        try
        {
            // A careful forger: the line changed, its chunk recompressed and indexed again, the file consistent in itself.
            await File.WriteAllBytesAsync(file, Forge(original, runId, "line 7", "line 8"));
            var refused = await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/events", LedgerHost.ReadKey);
            Assert.Equal("run-archived", refused.ProblemCode);
            var restore = await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/restore", LedgerHost.AdminKey);
            Assert.Equal("archive-corrupt", restore.ProblemCode);
            Assert.Equal(1, await EventsOf(runId));
            var report = await _ledger.Verify();
            var difference = Assert.Single(report.Differences, d => d.StartsWith($"archive/{runId}:", StringComparison.Ordinal));
            Assert.Contains($"first bad event: version {version}", difference);

            // A byte changed anywhere in a chunk: that chunk is named by its first event.
            var flipped = (byte[])original.Clone();
            flipped[ArchiveFormat.Magic.Length + 20] ^= 0x5a;
            await File.WriteAllBytesAsync(file, flipped);
            Assert.Equal("run-archived", (await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/events", LedgerHost.ReadKey)).ProblemCode);
            var flippedReport = await _ledger.Verify();
            Assert.Contains(flippedReport.Differences, d => d.StartsWith($"archive/{runId}:", StringComparison.Ordinal) && d.Contains("first bad event: version 1"));
        }
        finally
        {
            await File.WriteAllBytesAsync(file, original);
        }
        Assert.Equal(history.Events.ToJsonString(), (await _api.History(runId)).Events.ToJsonString());
        Assert.True((await _ledger.Verify()).Passed);
    }

    [Fact]
    public async Task two_nodes_sweeping_at_once_archive_each_run_once_while_the_ledger_keeps_taking_events()
    {
        var board = await Board();
        var runs = new List<string>();
        for (var i = 0; i < 16; i++) runs.Add((await _api.Finished(board, $"p{i % 4}", i, logs: 2)).RunId);
        var rows = new Dictionary<string, List<string>>();
        foreach (var id in runs) rows[id] = await _ledger.Rows(id);
        await _ledger.Settled();
        _ledger.Clock.Advance(RetentionHost.Window + TimeSpan.FromMinutes(1));

        await using var other = await _ledger.SecondInstance(RetentionHost.Settings(host.Directory, new Dictionary<string, string> { ["Ledger:Retention:Parallelism"] = "3" }));
        using var stop = new CancellationTokenSource();
        var writes = Task.Run(async () =>
        {
            var done = 0;
            while (!stop.IsCancellationRequested)
            {
                await _api.Finished(board, "busy", done, logs: 1);
                done++;
            }
            return done;
        });
        var sweeps = await Task.WhenAll(_ledger.RetentionSweep(), _ledger.RetentionSweep(other), _ledger.RetentionSweep(), _ledger.RetentionSweep(other));
        await stop.CancelAsync();
        Assert.True(await writes > 0);

        Assert.All(sweeps, s => Assert.True(s.Archiving().Failures.Count == 0, $"{string.Join(", ", s.Archiving().Failures.Select(f => $"{f.Key} {f.Value}"))}: {s.Archiving().LastError}"));
        foreach (var id in runs)
        {
            Assert.Equal(1, await EventsOf(id));
            Assert.Equal(1, await _ledger.Scalar("select json_array_length(bundles) from ledger.ledger_archived_runs where run_id = @id", ("id", id)));
        }
        foreach (var id in runs)
        {
            var folder = Path.GetDirectoryName(Path.Combine(host.Directory, ArchiveFiles.RelativePath(id, 1, new string('0', 16))))!;
            Assert.Single(Directory.EnumerateFiles(folder, id + ".*"));
        }
        // Restored, each gives back exactly what it held.
        foreach (var id in runs.Take(3))
        {
            Assert.Equal(HttpStatusCode.OK, (await _api.Send(HttpMethod.Post, $"/api/runs/{id}/restore", LedgerHost.AdminKey)).Status);
            Assert.Equal(rows[id], await _ledger.Rows(id));
        }
        var report = await _ledger.Verify();
        Assert.True(report.Passed, string.Join("\n", report.Differences));
    }

    private async Task<string> BundleOf(string runId)
    {
        var path = await _ledger.Scalar<string>("select bundles->0->>'path' from ledger.ledger_archived_runs where run_id = @id", ("id", runId));
        return Path.Combine(host.Directory, path);
    }

    /// <summary>Rewrites a bundle with one event line's text changed, its chunk recompressed and the index made to match.</summary>
    private static byte[] Forge(byte[] file, string runId, string from, string to)
    {
        var path = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(path, file);
            using var reader = ArchiveFormat.Reader.Open(path, runId, "forgery", null);
            using var output = new MemoryStream();
            output.Write(ArchiveFormat.Magic);
            var chunks = new List<ArchiveChunk>();
            for (var i = 0; i < reader.Manifest.Chunks.Count; i++)
            {
                var chunk = reader.Manifest.Chunks[i];
                var content = reader.ReadChunk(i);
                var raw = new MemoryStream();
                raw.Write(JsonSerializer.SerializeToUtf8Bytes(content.Start, ArchiveFormat.ManifestJson));
                raw.WriteByte((byte)'\n');
                foreach (var line in content.Events)
                {
                    raw.Write(Encoding.UTF8.GetBytes(Encoding.UTF8.GetString(line.Bytes.Span).Replace(from, to)));
                    raw.WriteByte((byte)'\n');
                }
                var bytes = raw.ToArray();
                var compressed = new byte[BrotliEncoder.GetMaxCompressedLength(bytes.Length)];
                Assert.True(BrotliEncoder.TryCompress(bytes, compressed, out var written, 5, 22));
                var offset = output.Position;
                output.Write(compressed, 0, written);
                chunks.Add(chunk with { Offset = offset, Length = written, RawLength = bytes.Length, Sha256 = ArchiveFormat.Sha256(compressed.AsSpan(0, written)) });
            }
            var manifestOffset = output.Position;
            var manifest = JsonSerializer.SerializeToUtf8Bytes(reader.Manifest with { Chunks = chunks }, ArchiveFormat.ManifestJson);
            output.Write(manifest);
            var trailer = new byte[ArchiveFormat.TrailerLength];
            BinaryPrimitives.WriteInt64LittleEndian(trailer, manifestOffset);
            BinaryPrimitives.WriteInt32LittleEndian(trailer.AsSpan(8), manifest.Length);
            ArchiveFormat.EndMagic.CopyTo(trailer, 12);
            output.Write(trailer);
            return output.ToArray();
        }
        finally
        {
            File.Delete(path);
        }
    }
}
