using System.Text.Json;
using Ledger.Infrastructure;
using Ledger.Retention;
using Ledger.Runs;
using Ledger.Tests.Fixtures;

namespace Ledger.Tests.Retention;

/// <summary>The archive file format on its own: ranged reads, determinism, and what a change inside it looks like.</summary>
public sealed class ArchiveFormatTests
{
    private const string RunId = "format-run";

    private static List<(ArchivedEvent Raw, object Data)> Stream(int heartbeats)
    {
        var at = new DateTimeOffset(2026, 11, 30, 10, 0, 0, TimeSpan.Zero);
        var events = new List<object>
        {
            TestEvents.Registered(RunId, at, leaseSeconds: 300),
            new RunClaimed("w", "hash", at, at.AddMinutes(5)),
        };
        for (var i = 0; i < heartbeats; i++)
        {
            events.Add(TestEvents.Heartbeat(new Stamp($"h{i}", at.AddSeconds(i), at.AddSeconds(i + 1))));
        }
        return events.Select((e, i) => (new ArchivedEvent(i + 1, 1000 + i * 3, Guid.NewGuid(), e.GetType().Name, null, "*DEFAULT*", at.AddSeconds(i),
            JsonSerializer.Serialize(e, e.GetType(), LedgerJson.Options)), e)).ToList();
    }

    private static (byte[] Bytes, ArchiveManifest Manifest, string ManifestSha) Write(List<(ArchivedEvent Raw, object Data)> events, int chunkEvents)
    {
        using var output = new MemoryStream();
        var writer = new ArchiveFormat.Writer(output, RunId, 1, ArchiveFormat.ChainOrigin(RunId), new RunReplay.Fold(), chunkEvents);
        foreach (var (raw, data) in events) writer.Add(raw, data);
        var (manifest, sha) = writer.Complete();
        return (output.ToArray(), manifest, sha);
    }

    private static ArchiveFormat.Reader Open(byte[] bytes, string? manifestSha, out string path)
    {
        path = Path.GetTempFileName();
        File.WriteAllBytes(path, bytes);
        return ArchiveFormat.Reader.Open(path, RunId, "test", manifestSha);
    }

    [Fact]
    public void a_bundle_is_read_a_chunk_at_a_time_each_starting_from_the_refold_before_it()
    {
        var events = Stream(95);
        var (bytes, manifest, sha) = Write(events, chunkEvents: 10);
        Assert.Equal(97, manifest.Count);
        Assert.Equal(10, manifest.Chunks.Count);
        using var reader = Open(bytes, sha, out var path);
        try
        {
            var fold = new RunReplay.Fold();
            for (var version = 1L; version <= 97; version++)
            {
                var index = reader.ChunkOf(version);
                var chunk = reader.Manifest.Chunks[index];
                Assert.InRange(version, chunk.FirstVersion, chunk.LastVersion);
                if (version == chunk.FirstVersion)
                {
                    var content = reader.ReadChunk(index);
                    // The chunk starts from exactly the state the refold had before its first event.
                    Assert.Equal(fold.Run is null ? null : RunSnapshotStore.Serialize(fold.Run), content.Start.State);
                    Assert.Equal(fold.Version, content.Start.Version);
                    Assert.Equal(Enumerable.Range((int)chunk.FirstVersion, (int)(chunk.LastVersion - chunk.FirstVersion + 1)).Select(v => (long)v),
                        content.Events.Select(e => e.Event.Version));
                }
                var (raw, data) = events[(int)version - 1];
                fold.Apply(new StoredEvent(raw.Version, raw.Sequence, raw.Timestamp, data), explain: false);
            }
            Assert.Equal(fold.RecordedThrough!.Value.UtcTicks, reader.Manifest.RecordedThrough);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void the_same_events_give_the_same_bytes_and_any_change_shows()
    {
        var events = Stream(30);
        var (bytes, _, sha) = Write(events, 8);
        var (again, _, shaAgain) = Write(events, 8);
        Assert.Equal(bytes, again);
        Assert.Equal(sha, shaAgain);

        // Another event anywhere: another content digest.
        var changed = events.ToList();
        changed[5] = (changed[5].Raw with { Data = changed[5].Raw.Data.Replace("h3", "hX") }, changed[5].Data);
        var (_, manifest, _) = Write(changed, 8);
        Assert.NotEqual(Write(events, 8).Manifest.ContentSha256, manifest.ContentSha256);

        // The manifest is not the one recorded: refused at once.
        Assert.Throws<ArchiveUnreadableException>(() => Open(bytes, new string('0', 64), out _).Dispose());

        // An event line dropped from a chunk: named by the version that is missing.
        var chunk = Write(events, 8).Manifest.Chunks[1];
        using var reader = Open(bytes, sha, out var path);
        try
        {
            var content = reader.ReadChunk(1);
            var raw = new List<byte>(JsonSerializer.SerializeToUtf8Bytes(content.Start, ArchiveFormat.ManifestJson)) { (byte)'\n' };
            foreach (var line in content.Events.Where(e => e.Event.Version != chunk.FirstVersion + 2))
            {
                raw.AddRange(line.Bytes.ToArray());
                raw.Add((byte)'\n');
            }
            var dropped = Assert.Throws<ArchiveUnreadableException>(() => ArchiveFormat.Parse(raw.ToArray(), chunk, RunId, "test"));
            Assert.Equal(chunk.FirstVersion + 2, dropped.Version);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
