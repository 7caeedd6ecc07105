using System.Buffers;
using System.Buffers.Binary;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Ledger.Infrastructure;
using Ledger.Runs;

namespace Ledger.Retention;

/// <summary>One event as Marten stored it, column for column: what an archive keeps and a restore puts back.</summary>
public sealed record ArchivedEvent(long Version, long Sequence, Guid Id, string Type, string? DotNetType, string TenantId,
    DateTimeOffset Timestamp, string Data);

/// <summary>
/// Where a chunk starts: the refold's state after every event before it (null before the run's
/// registration), so that a chunk is read and explained without the chunks before it.
/// </summary>
public sealed record ChunkStart(long Version, long Sequence, long? RecordedThrough, string? State);

/// <summary>One independently compressed chunk of a bundle, as the manifest indexes it.</summary>
/// <param name="Offset">Where its compressed bytes start in the file.</param>
/// <param name="Length">How many compressed bytes.</param>
/// <param name="RawLength">Their length once decompressed.</param>
/// <param name="Sha256">The digest of the compressed bytes.</param>
/// <param name="Prev">The chain value entering the chunk: the digest of the event line before its first.</param>
/// <param name="RecordedThrough">The latest ledger time (UTC ticks) of every event of the run through the chunk's last.</param>
public sealed record ArchiveChunk(long FirstVersion, long LastVersion, long Offset, int Length, int RawLength, string Sha256, string Prev,
    long RecordedThrough);

/// <summary>
/// What a bundle holds, written at its end: the run, the versions and sequences, the SHA-256 of its
/// content (every event line, in order, each followed by a newline), the hash chain's two ends and
/// the chunk index. Its own SHA-256 is kept by the marker in PostgreSQL, which makes the index as
/// trustworthy as the content.
/// </summary>
public sealed record ArchiveManifest(
    int Format,
    string RunId,
    int Bundle,
    long FirstVersion,
    long LastVersion,
    long Count,
    long FirstSequence,
    long LastSequence,
    DateTimeOffset FirstTimestamp,
    DateTimeOffset LastTimestamp,
    long RecordedThrough,
    int FoldRevision,
    string ChainStart,
    string ChainEnd,
    string ContentSha256,
    IReadOnlyList<ArchiveChunk> Chunks);

/// <summary>
/// An event line read back: the event, the chain value it names, the digest of its own bytes (empty
/// when the chain was not checked) and those bytes, with where the event's data lies in them
/// (deserialized from there, not re-encoded).
/// </summary>
public sealed record ArchivedLine(ArchivedEvent Event, string Prev, string Hash, ReadOnlyMemory<byte> Bytes, int DataOffset, int DataLength)
{
    public ReadOnlyMemory<byte> Data => Bytes.Slice(DataOffset, DataLength);
}

/// <summary>A chunk read back and checked: where it starts and its events.</summary>
public sealed record ChunkContent(ChunkStart Start, IReadOnlyList<ArchivedLine> Events);

/// <summary>An archive that cannot be read as it was written: missing, unreadable, or not what its marker says.</summary>
public class ArchiveUnreadableException(string runId, string bundle, string detail, long? version = null, long? sequence = null)
    : Exception($"The archive of run {runId} ({bundle}) {detail}")
{
    public string RunId { get; } = runId;
    public string Bundle { get; } = bundle;
    public string Detail { get; } = detail;
    /// <summary>The first event found bad, when one can be named.</summary>
    public long? Version { get; } = version;
    public long? Sequence { get; } = sequence;
}

/// <summary>
/// The archive file format (version 1). A bundle is one file:
/// <code>
/// "RLARCHV1"  chunk*  manifest (JSON)  manifestOffset (int64 LE)  manifestLength (int32 LE)  "RLAEND01"
/// </code>
/// Each chunk is Brotli-compressed on its own and holds a start line (<see cref="ChunkStart"/>) and
/// then one line per event (<see cref="ArchivedEvent"/> plus <c>prev</c>, the SHA-256 of the line
/// before, the first taking the chain's start). A ranged read (a history page, a state at a version)
/// reads the trailer, the manifest and only the chunks it needs. The bytes are a pure function of
/// the events and the chunk size, so two nodes writing the same bundle write the same file.
/// </summary>
public static class ArchiveFormat
{
    public const int Version = 1;
    public static readonly byte[] Magic = "RLARCHV1"u8.ToArray();
    public static readonly byte[] EndMagic = "RLAEND01"u8.ToArray();
    public const int TrailerLength = 8 + 4 + 8;
    private const int BrotliQuality = 5;
    private const int BrotliWindow = 22;
    /// <summary>A chunk closes at this many raw bytes even short of its event count, so huge events never make a huge chunk.</summary>
    private const int ChunkBytes = 1 << 20;

    public static readonly JsonSerializerOptions ManifestJson = new(JsonSerializerDefaults.Web) { WriteIndented = false };

    /// <summary>The chain value before a run's first event: bound to the run, so a bundle cannot be passed off as another run's.</summary>
    public static string ChainOrigin(string runId) => Hex(SHA256.HashData(Encoding.UTF8.GetBytes("run-ledger-archive:" + runId)));

    public static string Hex(ReadOnlySpan<byte> bytes) => Convert.ToHexStringLower(bytes);

    public static string Sha256(ReadOnlySpan<byte> bytes) => Hex(SHA256.HashData(bytes));

    /// <summary>
    /// Writes a bundle to <paramref name="output"/>, event by event. The fold goes on from the state
    /// before the bundle's first event (a new fold for the run's first bundle) and gives each chunk
    /// its start.
    /// </summary>
    public sealed class Writer(Stream output, string runId, int bundle, string origin, RunReplay.Fold fold, int chunkEvents)
    {
        private readonly string _chainStart = origin;
        private readonly IncrementalHash _content = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        private readonly List<ArchiveChunk> _chunks = [];
        private readonly ArrayBufferWriter<byte> _raw = new(64 * 1024);
        private readonly ArrayBufferWriter<byte> _line = new(1024);
        private readonly Utf8JsonWriter _json = new(new ArrayBufferWriter<byte>(1));
        private long _offset;
        private int _inChunk;
        private long _chunkFirst;
        private string _chunkPrev = origin;
        private string _prev = origin;
        private long _count, _firstVersion, _lastVersion, _firstSequence, _lastSequence;
        private DateTimeOffset _firstTimestamp, _lastTimestamp;
        private bool _started;

        public long Count => _count;

        public void Add(ArchivedEvent e, object data)
        {
            if (!_started)
            {
                output.Write(Magic);
                _offset = Magic.Length;
                _started = true;
                _firstVersion = e.Version;
                _firstSequence = e.Sequence;
                _firstTimestamp = e.Timestamp;
            }
            if (_inChunk == 0) BeginChunk(e.Version);

            _line.ResetWrittenCount();
            _json.Reset(_line);
            WriteEvent(_json, e, _prev);
            _json.Flush();
            var line = _line.WrittenSpan;
            _raw.Write(line);
            _raw.Write("\n"u8);
            _content.AppendData(line);
            _content.AppendData("\n"u8);
            _prev = Sha256(line);

            fold.Apply(new StoredEvent(e.Version, e.Sequence, e.Timestamp, data), explain: false);
            _count++;
            _lastVersion = e.Version;
            _lastSequence = e.Sequence;
            _lastTimestamp = e.Timestamp;
            _inChunk++;
            if (_inChunk >= chunkEvents || _raw.WrittenCount >= ChunkBytes) EndChunk();
        }

        /// <summary>Writes the last chunk, the manifest and the trailer; the manifest and the SHA-256 of its bytes.</summary>
        public (ArchiveManifest Manifest, string ManifestSha256) Complete()
        {
            if (!_started) throw new InvalidOperationException($"A bundle of run {runId} must hold at least one event.");
            if (_inChunk > 0) EndChunk();
            var manifest = new ArchiveManifest(Version, runId, bundle, _firstVersion, _lastVersion, _count, _firstSequence, _lastSequence,
                _firstTimestamp, _lastTimestamp, fold.RecordedThrough?.UtcTicks ?? 0, RunSnapshotStore.FoldRevision, _chainStart, _prev,
                Hex(_content.GetHashAndReset()), _chunks);
            var bytes = JsonSerializer.SerializeToUtf8Bytes(manifest, ManifestJson);
            output.Write(bytes);
            Span<byte> trailer = stackalloc byte[TrailerLength];
            BinaryPrimitives.WriteInt64LittleEndian(trailer, _offset);
            BinaryPrimitives.WriteInt32LittleEndian(trailer[8..], bytes.Length);
            EndMagic.CopyTo(trailer[12..]);
            output.Write(trailer);
            return (manifest, Sha256(bytes));
        }

        private void BeginChunk(long firstVersion)
        {
            _raw.ResetWrittenCount();
            _chunkFirst = firstVersion;
            _chunkPrev = _prev;
            var start = new ChunkStart(fold.Version, fold.Sequence, fold.RecordedThrough?.UtcTicks,
                fold.Run is null ? null : RunSnapshotStore.Serialize(fold.Run));
            _raw.Write(JsonSerializer.SerializeToUtf8Bytes(start, ManifestJson));
            _raw.Write("\n"u8);
        }

        private void EndChunk()
        {
            var raw = _raw.WrittenSpan;
            var buffer = ArrayPool<byte>.Shared.Rent(BrotliEncoder.GetMaxCompressedLength(raw.Length));
            try
            {
                if (!BrotliEncoder.TryCompress(raw, buffer, out var written, BrotliQuality, BrotliWindow))
                {
                    throw new InvalidOperationException("Brotli could not compress an archive chunk.");
                }
                var compressed = buffer.AsSpan(0, written);
                output.Write(compressed);
                _chunks.Add(new ArchiveChunk(_chunkFirst, _lastVersion, _offset, written, raw.Length, Sha256(compressed), _chunkPrev,
                    fold.RecordedThrough?.UtcTicks ?? 0));
                _offset += written;
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
            _inChunk = 0;
        }
    }

    private static void WriteEvent(Utf8JsonWriter json, ArchivedEvent e, string prev)
    {
        json.WriteStartObject();
        json.WriteNumber("version", e.Version);
        json.WriteNumber("sequence", e.Sequence);
        json.WriteString("id", e.Id);
        json.WriteString("type", e.Type);
        if (e.DotNetType is not null) json.WriteString("dotnetType", e.DotNetType);
        json.WriteString("tenant", e.TenantId);
        json.WriteString("timestamp", e.Timestamp.ToUniversalTime());
        json.WritePropertyName("data");
        json.WriteRawValue(e.Data, skipInputValidation: true);
        json.WriteString("prev", prev);
        json.WriteEndObject();
    }

    /// <summary>
    /// Reads a bundle: the trailer and the manifest at once (checked against the SHA-256 its marker
    /// keeps), then any chunk on demand, each checked against the manifest (its digest, its events'
    /// versions and their chain).
    /// </summary>
    public sealed class Reader : IDisposable
    {
        private readonly Microsoft.Win32.SafeHandles.SafeFileHandle _file;
        private readonly string _label;

        public ArchiveManifest Manifest { get; }
        public string ManifestSha256 { get; }
        public long Length { get; }

        private Reader(Microsoft.Win32.SafeHandles.SafeFileHandle file, string label, ArchiveManifest manifest, string manifestSha256, long length)
        {
            _file = file;
            _label = label;
            Manifest = manifest;
            ManifestSha256 = manifestSha256;
            Length = length;
        }

        /// <summary>
        /// Opens a bundle whose manifest was read and checked before (<paramref name="known"/>, kept by
        /// <see cref="RunArchives"/>): only the file is opened. Each chunk read is still checked against
        /// that manifest's digest of it, so a file changed since is refused all the same.
        /// </summary>
        public static Reader Open(string path, string runId, string label, ArchiveManifest known, string knownSha256)
        {
            var file = OpenFile(path, runId, label);
            try
            {
                return new Reader(file, label, known, knownSha256, RandomAccess.GetLength(file));
            }
            catch
            {
                file.Dispose();
                throw;
            }
        }

        private static Microsoft.Win32.SafeHandles.SafeFileHandle OpenFile(string path, string runId, string label)
        {
            try
            {
                return File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
            }
            catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
            {
                throw new ArchiveUnreadableException(runId, label, "is missing: no file " + path);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new ArchiveUnreadableException(runId, label, $"cannot be opened ({e.Message})");
            }
        }

        /// <summary>Opens a bundle; with <paramref name="expectedManifestSha256"/>, refuses one whose manifest is not the one its marker names.</summary>
        public static Reader Open(string path, string runId, string label, string? expectedManifestSha256)
        {
            var file = OpenFile(path, runId, label);
            try
            {
                var length = RandomAccess.GetLength(file);
                if (length < Magic.Length + TrailerLength) throw new ArchiveUnreadableException(runId, label, "is truncated");
                Span<byte> trailer = stackalloc byte[TrailerLength];
                ReadExactly(file, trailer, length - TrailerLength, runId, label);
                Span<byte> magic = stackalloc byte[Magic.Length];
                ReadExactly(file, magic, 0, runId, label);
                if (!magic.SequenceEqual(Magic) || !trailer[12..].SequenceEqual(EndMagic))
                {
                    throw new ArchiveUnreadableException(runId, label, "is not an archive of this format (its first or last bytes differ)");
                }
                var offset = BinaryPrimitives.ReadInt64LittleEndian(trailer);
                var size = BinaryPrimitives.ReadInt32LittleEndian(trailer[8..]);
                if (offset < Magic.Length || size <= 0 || offset + size != length - TrailerLength)
                {
                    throw new ArchiveUnreadableException(runId, label, "has a damaged trailer");
                }
                var bytes = new byte[size];
                ReadExactly(file, bytes, offset, runId, label);
                var digest = Sha256(bytes);
                if (expectedManifestSha256 is not null && !string.Equals(digest, expectedManifestSha256, StringComparison.Ordinal))
                {
                    throw new ArchiveUnreadableException(runId, label, "was changed: its manifest is not the one recorded when it was archived");
                }
                ArchiveManifest? manifest;
                try
                {
                    manifest = JsonSerializer.Deserialize<ArchiveManifest>(bytes, ManifestJson);
                }
                catch (JsonException)
                {
                    manifest = null;
                }
                if (manifest is null || manifest.Format != Version || manifest.RunId != runId)
                {
                    throw new ArchiveUnreadableException(runId, label, "has a manifest this ledger cannot read or of another run");
                }
                return new Reader(file, label, manifest, digest, length);
            }
            catch
            {
                file.Dispose();
                throw;
            }
        }

        /// <summary>The index of the chunk holding <paramref name="version"/> (the last one when past the end).</summary>
        public int ChunkOf(long version)
        {
            var chunks = Manifest.Chunks;
            int lo = 0, hi = chunks.Count - 1;
            while (lo < hi)
            {
                var mid = (lo + hi) / 2;
                if (chunks[mid].LastVersion < version) lo = mid + 1;
                else hi = mid;
            }
            return lo;
        }

        /// <summary>
        /// Reads and checks one chunk: its digest, its start, its events' versions and, with
        /// <paramref name="checkChain"/>, their hash chain. A read for the history may leave the chain
        /// to verify: the chunk's digest, in a manifest whose digest PostgreSQL keeps, already proves
        /// every byte of it.
        /// </summary>
        public ChunkContent ReadChunk(int index, bool checkChain = true)
        {
            var chunk = Manifest.Chunks[index];
            var runId = Manifest.RunId;
            var compressed = ArrayPool<byte>.Shared.Rent(chunk.Length);
            var raw = new byte[chunk.RawLength];
            try
            {
                var span = compressed.AsSpan(0, chunk.Length);
                ReadExactly(_file, span, chunk.Offset, runId, _label);
                if (Sha256(span) != chunk.Sha256)
                {
                    throw new ArchiveUnreadableException(runId, _label,
                        $"was changed: the chunk of versions {chunk.FirstVersion}..{chunk.LastVersion} is not the one written", chunk.FirstVersion);
                }
                if (!BrotliDecoder.TryDecompress(span, raw, out var written) || written != chunk.RawLength)
                {
                    throw new ArchiveUnreadableException(runId, _label,
                        $"has a chunk that cannot be decompressed (versions {chunk.FirstVersion}..{chunk.LastVersion})", chunk.FirstVersion);
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(compressed);
            }
            return Parse(raw, chunk, runId, _label, checkChain);
        }

        public void Dispose() => _file.Dispose();
    }

    /// <summary>Parses a decompressed chunk and checks its events against the index entry (versions, chain).</summary>
    public static ChunkContent Parse(byte[] buffer, ArchiveChunk chunk, string runId, string label, bool checkChain = true)
    {
        var raw = buffer.AsSpan();
        var newline = raw.IndexOf((byte)'\n');
        if (newline < 0) throw new ArchiveUnreadableException(runId, label, "has a chunk without its start", chunk.FirstVersion);
        ChunkStart? start;
        try
        {
            start = JsonSerializer.Deserialize<ChunkStart>(raw[..newline], ManifestJson);
        }
        catch (JsonException)
        {
            start = null;
        }
        if (start is null || start.Version != chunk.FirstVersion - 1)
        {
            throw new ArchiveUnreadableException(runId, label, "has a chunk whose start does not match its index", chunk.FirstVersion);
        }
        var events = new List<ArchivedLine>((int)Math.Min(chunk.LastVersion - chunk.FirstVersion + 1, 100_000));
        var position = newline + 1;
        var prev = chunk.Prev;
        var expected = chunk.FirstVersion;
        while (position < buffer.Length)
        {
            var end = raw[position..].IndexOf((byte)'\n');
            var length = end < 0 ? buffer.Length - position : end;
            var line = new ReadOnlyMemory<byte>(buffer, position, length);
            position += length + 1;
            var parsed = ParseLine(line, runId, label, expected, checkChain);
            if (parsed.Event.Version != expected)
            {
                throw new ArchiveUnreadableException(runId, label,
                    $"is missing an event: version {expected} is followed by {parsed.Event.Version}", expected, parsed.Event.Sequence);
            }
            if (checkChain && parsed.Prev != prev)
            {
                // The line before this one is not the one the chain says: that one was changed (or this one was).
                var bad = expected == chunk.FirstVersion ? parsed.Event.Version : expected - 1;
                throw new ArchiveUnreadableException(runId, label,
                    $"was changed: the hash chain breaks at version {bad}", bad, bad == parsed.Event.Version ? parsed.Event.Sequence : null);
            }
            prev = parsed.Hash;
            events.Add(parsed);
            expected++;
        }
        if (expected - 1 != chunk.LastVersion)
        {
            throw new ArchiveUnreadableException(runId, label,
                $"is missing events: the chunk ends at version {expected - 1}, its index says {chunk.LastVersion}", expected);
        }
        return new ChunkContent(start, events);
    }

    private static ArchivedLine ParseLine(ReadOnlyMemory<byte> line, string runId, string label, long expectedVersion, bool hash)
    {
        try
        {
            // One pass of a reader, no document: this runs for every event a history page folds.
            var reader = new Utf8JsonReader(line.Span);
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject) throw new JsonException("not an object");
            long? version = null, sequence = null;
            Guid? id = null;
            string? type = null, dotnet = null, tenant = null, prev = null;
            DateTimeOffset? timestamp = null;
            int dataStart = -1, dataEnd = -1;
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                if (reader.ValueTextEquals("data"u8))
                {
                    reader.Read();
                    dataStart = (int)reader.TokenStartIndex;
                    reader.Skip();
                    dataEnd = (int)reader.BytesConsumed;
                    continue;
                }
                var name = reader.ValueSpan;
                reader.Read();
                if (name.SequenceEqual("version"u8)) version = reader.GetInt64();
                else if (name.SequenceEqual("sequence"u8)) sequence = reader.GetInt64();
                else if (name.SequenceEqual("id"u8)) id = reader.GetGuid();
                else if (name.SequenceEqual("type"u8)) type = reader.GetString();
                else if (name.SequenceEqual("dotnetType"u8)) dotnet = reader.GetString();
                else if (name.SequenceEqual("tenant"u8)) tenant = reader.GetString();
                else if (name.SequenceEqual("timestamp"u8)) timestamp = reader.GetDateTimeOffset();
                else if (name.SequenceEqual("prev"u8)) prev = reader.GetString();
                else reader.Skip();
            }
            if (version is null || sequence is null || id is null || type is null || tenant is null || timestamp is null || prev is null || dataStart < 0)
            {
                throw new JsonException("a member is missing");
            }
            var data = line.Span[dataStart..dataEnd];
            var e = new ArchivedEvent(version.Value, sequence.Value, id.Value, type, dotnet, tenant, timestamp.Value, System.Text.Encoding.UTF8.GetString(data));
            return new ArchivedLine(e, prev, hash ? Sha256(line.Span) : "", line, dataStart, dataEnd - dataStart);
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException or FormatException)
        {
            throw new ArchiveUnreadableException(runId, label, $"has an event line that cannot be read near version {expectedVersion}", expectedVersion);
        }
    }

    private static void ReadExactly(Microsoft.Win32.SafeHandles.SafeFileHandle file, Span<byte> buffer, long offset, string runId, string label)
    {
        var done = 0;
        while (done < buffer.Length)
        {
            int read;
            try
            {
                read = RandomAccess.Read(file, buffer[done..], offset + done);
            }
            catch (IOException e)
            {
                throw new ArchiveUnreadableException(runId, label, $"cannot be read ({e.Message})");
            }
            if (read == 0) throw new ArchiveUnreadableException(runId, label, "is truncated");
            done += read;
        }
    }
}
