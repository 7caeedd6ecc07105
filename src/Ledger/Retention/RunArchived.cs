using JasperFx.Events;
using Ledger.Runs;

namespace Ledger.Retention;

/// <summary>One archive file of a run: the versions it holds and the digests that prove it.</summary>
/// <param name="Number">1 for the run's first bundle; a late event archived by a later sweep goes into the next.</param>
/// <param name="Path">Where it is, relative to <c>Ledger:Retention:Directory</c>.</param>
/// <param name="Sha256">The SHA-256 of its content: every event line, in order.</param>
/// <param name="ManifestSha256">The SHA-256 of its manifest (which indexes and digests every chunk).</param>
public sealed record ArchiveBundle(int Number, string Path, string Sha256, string ManifestSha256, long Count, long FirstVersion,
    long LastVersion, long FirstSequence, long LastSequence, long Bytes);

/// <summary>
/// The one event an archived run keeps in PostgreSQL (<c>run.archived</c>): Marten's compacted
/// snapshot of the run (<see cref="Compacted{T}"/>, so that Marten's own folds, such as
/// <c>AggregateStreamAsync</c>, start from it) carrying the archive's facts: the latest bundle, its
/// digest, how many events the archives hold and the last version they hold, every bundle, and the
/// verdict whose place it takes. It replaces that verdict in place (same sequence, same version), so
/// whatever folds verdicts in event-store order (the standings, verify) finds it where the verdict was.
/// </summary>
public sealed record RunArchived(
    Run Snapshot,
    string RunId,
    string Bundle,
    string Digest,
    long Count,
    long LastVersion,
    IReadOnlyList<ArchiveBundle> Bundles,
    VerdictReached? Verdict,
    DateTimeOffset ArchivedAt) : Compacted<Run>(Snapshot, Guid.Empty, RunId)
{
    public const string WireName = "run.archived";
}
