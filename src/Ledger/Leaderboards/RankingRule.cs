using System.Buffers.Binary;
using System.Text;

namespace Ledger.Leaderboards;

/// <summary>
/// The ranking rule, written once. A result's rank key is a byte string whose plain byte order is
/// the board's order, better first:
/// <list type="number">
/// <item>the primary score in the board's direction (a NaN score is not ranked at all);</item>
/// <item>the tie-break score in its direction, a missing (or NaN) tie-break after every present one;</item>
/// <item>the earliest completion;</item>
/// <item>the run id, ordinally (run ids are ASCII).</item>
/// </list>
/// Everything that ranks compares these keys and nothing else: the standings fold picks a
/// participant's best by it, PostgreSQL orders the live board and the board as of a time by the
/// stored key (bytea compares bytewise), and verify and the bench use the same function.
/// </summary>
public static class RankingRule
{
    private const int ScoreBytes = 8;
    private const int FixedBytes = ScoreBytes + 1 + ScoreBytes + 8;

    /// <summary>The rank key of a result, or null when the result cannot be ranked (a NaN primary score).</summary>
    public static byte[]? Key(Ranking ranking, double score, double? tieBreak, DateTimeOffset completedAt, string runId)
    {
        if (double.IsNaN(score)) return null;
        var key = new byte[FixedBytes + Encoding.ASCII.GetByteCount(runId)];
        var span = key.AsSpan();
        BinaryPrimitives.WriteUInt64BigEndian(span, Ordered(score, ranking.Direction));
        var hasTieBreak = tieBreak is { } t && !double.IsNaN(t);
        span[ScoreBytes] = hasTieBreak ? (byte)0 : (byte)1;
        BinaryPrimitives.WriteUInt64BigEndian(span[(ScoreBytes + 1)..], hasTieBreak ? Ordered(tieBreak!.Value, ranking.TieBreakDirection) : 0);
        BinaryPrimitives.WriteInt64BigEndian(span[(2 * ScoreBytes + 1)..], completedAt.UtcTicks);
        Encoding.ASCII.GetBytes(runId, span[FixedBytes..]);
        return key;
    }

    /// <summary>The rank key of a standing's result.</summary>
    public static byte[]? Key(Ranking ranking, StandingResult result) =>
        Key(ranking, result.Score, result.TieBreak, result.CompletedAt, result.RunId);

    /// <summary>Better first: negative when <paramref name="x"/> ranks before <paramref name="y"/>.</summary>
    public static int Compare(ReadOnlySpan<byte> x, ReadOnlySpan<byte> y) => x.SequenceCompareTo(y);

    /// <summary>Orders keys as the board does (the same order PostgreSQL gives bytea).</summary>
    public static IComparer<byte[]> Order { get; } = Comparer<byte[]>.Create((x, y) => Compare(x, y));

    /// <summary>
    /// An unsigned integer whose order is the double's order in <paramref name="direction"/>, better
    /// (smaller) first: the IEEE 754 bits with the sign bit flipped for positives and every bit
    /// flipped for negatives give ascending order; Max inverts it. -0 counts as 0.
    /// </summary>
    private static ulong Ordered(double value, Direction direction)
    {
        var bits = (ulong)BitConverter.DoubleToInt64Bits(value == 0 ? 0.0 : value);
        var ascending = (bits & 0x8000_0000_0000_0000UL) == 0 ? bits ^ 0x8000_0000_0000_0000UL : ~bits;
        return direction == Direction.Max ? ~ascending : ascending;
    }
}
