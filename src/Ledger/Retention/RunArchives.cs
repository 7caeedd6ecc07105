using System.Security.Cryptography;
using System.Text;
using Ledger.Runs;
using Marten;

namespace Ledger.Retention;

/// <summary>
/// Reads archived runs: a bundle's chunks from a version on (history, time travel, export), or a
/// whole bundle checked end to end (the sweep's read-back, verify, restore). Events come back as
/// the history reads them from PostgreSQL (<see cref="StoredEvent"/>), deserialized by the store's
/// own serializer and event type names.
/// </summary>
public sealed class RunArchives(ArchiveFiles files, IDocumentStore store)
{
    private readonly RunHistoryReader.EventRange.Types _types = RunHistoryReader.EventRange.TypesOf(store);

    public ArchiveFiles Files => files;

    public object Deserialize(string runId, ArchivedEvent e)
    {
        if (!_types.ByName.TryGetValue(e.Type, out var type))
        {
            throw new ArchiveUnreadableException(runId, "?", $"holds an event of type '{e.Type}' this ledger does not know", e.Version, e.Sequence);
        }
        using var data = new MemoryStream(Encoding.UTF8.GetBytes(e.Data));
        return _types.Serializer.FromJson(type, data);
    }

    public StoredEvent ToStored(string runId, ArchivedEvent e) => new(e.Version, e.Sequence, e.Timestamp, Deserialize(runId, e));

    /// <summary>An event read back from an archive, deserialized straight from the line's bytes.</summary>
    public StoredEvent ToStored(string runId, ArchivedLine line)
    {
        var e = line.Event;
        if (!_types.ByName.TryGetValue(e.Type, out var type))
        {
            throw new ArchiveUnreadableException(runId, "?", $"holds an event of type '{e.Type}' this ledger does not know", e.Version, e.Sequence);
        }
        if (!System.Runtime.InteropServices.MemoryMarshal.TryGetArray(line.Data, out var segment)) return ToStored(runId, e);
        using var data = new MemoryStream(segment.Array!, segment.Offset, segment.Count, writable: false);
        return new StoredEvent(e.Version, e.Sequence, e.Timestamp, _types.Serializer.FromJson(type, data));
    }

    public static string Label(ArchiveBundle bundle) => $"bundle {bundle.Number}, {bundle.Path}";

    // Manifests already read and checked against their digest, by that digest: a history page then opens
    // only the file and the chunks it needs (a file changed since fails its chunks' digests all the same).
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, ArchiveManifest> _manifests = new(StringComparer.Ordinal);
    private const int KeptManifests = 2048;

    /// <summary>Opens a bundle of a run, refusing one whose manifest is not the one its marker names.</summary>
    public ArchiveFormat.Reader Open(string runId, ArchiveBundle bundle)
    {
        if (files.Root is null)
        {
            throw new ArchiveUnreadableException(runId, Label(bundle), "cannot be read: Ledger:Retention:Directory is not set on this node");
        }
        var path = files.FullPath(bundle.Path);
        if (_manifests.TryGetValue(bundle.ManifestSha256, out var known) && known.RunId == runId)
        {
            return ArchiveFormat.Reader.Open(path, runId, Label(bundle), known, bundle.ManifestSha256);
        }
        var reader = ArchiveFormat.Reader.Open(path, runId, Label(bundle), bundle.ManifestSha256);
        if (_manifests.Count >= KeptManifests) _manifests.Clear();
        _manifests[bundle.ManifestSha256] = reader.Manifest;
        return reader;
    }

    /// <summary>
    /// The chunks of a run's archives from the one holding <paramref name="fromVersion"/> on, in
    /// order, through the one holding <paramref name="throughVersion"/>; each checked as it is read.
    /// </summary>
    public IEnumerable<ChunkContent> ChunksFrom(ArchivedRunRow archive, long fromVersion, long throughVersion)
    {
        foreach (var bundle in archive.Bundles)
        {
            if (bundle.LastVersion < fromVersion) continue;
            if (bundle.FirstVersion > throughVersion) yield break;
            using var reader = Open(archive.RunId, bundle);
            for (var i = reader.ChunkOf(Math.Max(fromVersion, bundle.FirstVersion)); i < reader.Manifest.Chunks.Count; i++)
            {
                if (reader.Manifest.Chunks[i].FirstVersion > throughVersion) yield break;
                yield return reader.ReadChunk(i, checkChain: false);
            }
        }
    }

    /// <summary>Every chunk index entry of a run's archives, in order, with its bundle: where a time lies.</summary>
    public IReadOnlyList<(ArchiveBundle Bundle, ArchiveChunk Chunk)> Index(ArchivedRunRow archive)
    {
        var index = new List<(ArchiveBundle, ArchiveChunk)>();
        foreach (var bundle in archive.Bundles)
        {
            using var reader = Open(archive.RunId, bundle);
            index.AddRange(reader.Manifest.Chunks.Select(c => (bundle, c)));
        }
        return index;
    }

    /// <summary>
    /// Reads and checks every bundle of a run in order, each whole (<see cref="CheckBundle"/>), the
    /// versions and the hash chain following on from one bundle to the next from the run's origin;
    /// hands each event to <paramref name="each"/> as it is read, deserialized. Returns the last
    /// version the bundles hold. Throws <see cref="ArchiveUnreadableException"/> at the first bad one.
    /// </summary>
    public long CheckAll(string runId, IEnumerable<ArchiveBundle> bundles, Action<ArchivedLine, StoredEvent> each)
    {
        var chain = ArchiveFormat.ChainOrigin(runId);
        var next = 1L;
        foreach (var bundle in bundles)
        {
            var checkedBundle = CheckBundle(runId, bundle.Path, Label(bundle), bundle.ManifestSha256, bundle.Sha256, next, chain,
                line => each(line, ToStored(runId, line)));
            chain = checkedBundle.Manifest.ChainEnd;
            next = checkedBundle.Manifest.LastVersion + 1;
        }
        return next - 1;
    }

    /// <summary>What a whole bundle held, once every check passed.</summary>
    public sealed record Checked(ArchiveManifest Manifest, string ManifestSha256, long Bytes);

    /// <summary>
    /// Reads a whole bundle and checks it end to end: its manifest (against
    /// <paramref name="expectedManifestSha256"/> when given), every chunk, the events' versions from
    /// <paramref name="firstVersion"/> on, the hash chain from <paramref name="chainStart"/> to the
    /// manifest's end, and the content's SHA-256 (against <paramref name="expectedContentSha256"/> when
    /// given). Hands each event to <paramref name="each"/> in order. Throws
    /// <see cref="ArchiveUnreadableException"/> naming the first bad event it can name.
    /// </summary>
    public Checked CheckBundle(string runId, string path, string label, string? expectedManifestSha256, string? expectedContentSha256,
        long firstVersion, string chainStart, Action<ArchivedLine>? each)
    {
        if (files.Root is null) throw new ArchiveUnreadableException(runId, label, "cannot be read: Ledger:Retention:Directory is not set on this node");
        // The manifest's digest is compared last: a changed event is then named by the chain, whatever else was changed with it.
        using var reader = ArchiveFormat.Reader.Open(files.FullPath(path), runId, label, null);
        var manifest = reader.Manifest;
        if (manifest.FirstVersion != firstVersion || manifest.ChainStart != chainStart)
        {
            throw new ArchiveUnreadableException(runId, label,
                $"does not follow on from what precedes it (it starts at version {manifest.FirstVersion}, expected {firstVersion})", firstVersion);
        }
        if (manifest.Chunks.Count == 0 || manifest.Chunks[0].Prev != chainStart)
        {
            throw new ArchiveUnreadableException(runId, label, "has an index that does not start the chain", firstVersion);
        }
        using var content = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var prev = chainStart;
        var expected = firstVersion;
        for (var i = 0; i < manifest.Chunks.Count; i++)
        {
            var chunk = manifest.Chunks[i];
            if (chunk.FirstVersion != expected)
            {
                throw new ArchiveUnreadableException(runId, label, $"has a broken index at version {expected}", expected);
            }
            if (chunk.Prev != prev)
            {
                // The chunk before ended with another line than the chain says: its last event was changed.
                throw new ArchiveUnreadableException(runId, label, $"was changed: the hash chain breaks at version {expected - 1}", expected - 1);
            }
            var read = reader.ReadChunk(i);
            foreach (var line in read.Events)
            {
                // The line's own bytes, as written: re-serializing them could differ.
                content.AppendData(line.Bytes.Span);
                content.AppendData("\n"u8);
                each?.Invoke(line);
            }
            prev = read.Events.Count > 0 ? read.Events[^1].Hash : prev;
            expected = chunk.LastVersion + 1;
        }
        if (prev != manifest.ChainEnd)
        {
            throw new ArchiveUnreadableException(runId, label, $"was changed: its last event (version {manifest.LastVersion}) is not the one the chain ends with",
                manifest.LastVersion, manifest.LastSequence);
        }
        if (expected - 1 != manifest.LastVersion || manifest.Count != manifest.LastVersion - manifest.FirstVersion + 1)
        {
            throw new ArchiveUnreadableException(runId, label, $"holds versions {firstVersion}..{expected - 1}, its manifest says ..{manifest.LastVersion}", expected);
        }
        var digest = ArchiveFormat.Hex(content.GetHashAndReset());
        if (digest != manifest.ContentSha256 || (expectedContentSha256 is not null && digest != expectedContentSha256))
        {
            throw new ArchiveUnreadableException(runId, label, "was changed: the SHA-256 of its content is not the one recorded when it was archived");
        }
        if (expectedManifestSha256 is not null && reader.ManifestSha256 != expectedManifestSha256)
        {
            throw new ArchiveUnreadableException(runId, label, "was changed: its manifest is not the one recorded when it was archived");
        }
        return new Checked(manifest, reader.ManifestSha256, reader.Length);
    }
}
