using System.Text;
using Ledger.Infrastructure;
using Marten;
using Microsoft.Extensions.Options;

namespace Ledger.Forensics;

/// <summary>What a scrub of the stored refusals did.</summary>
public sealed record ScrubResult(long Checked, long Scrubbed);

/// <summary>
/// At start: every refusal kept before redaction existed, or under an older revision of its rules
/// (<see cref="Rejection.Redaction"/> below <see cref="Redaction.Version"/>), is redacted again, with
/// its anomaly record, and marked with the current revision. Idempotent; when every row is current it
/// costs one index lookup that finds nothing. Several nodes starting together may scrub the same rows:
/// redacting a redacted row changes nothing.
/// </summary>
public sealed class RejectionScrub(IDocumentStore store, IOptions<LedgerOptions> options, ILogger<RejectionScrub> logger) : IHostedService
{
    private const int Batch = 500;

    public async Task StartAsync(CancellationToken cancellationToken) => await ScrubAsync(cancellationToken);

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task<ScrubResult> ScrubAsync(CancellationToken ct)
    {
        long seen = 0, scrubbed = 0;
        while (true)
        {
            await using var session = store.LightweightSession();
            // The duplicated column, indexed: rows of an earlier version have none (null).
            var rows = await session.QueryAsync<Rejection>("where d.redaction is null or d.redaction < ? order by d.id limit ?", ct,
                Redaction.Version, Batch);
            if (rows.Count == 0) break;

            var anomalies = (await session.LoadManyAsync<AnomalyRecord>(ct, rows.Select(r => $"rejection:{r.Id}").ToArray()))
                .ToDictionary(a => a.Id, StringComparer.Ordinal);
            foreach (var row in rows)
            {
                seen++;
                var anomaly = anomalies.GetValueOrDefault($"rejection:{row.Id}");
                var (rowChanged, anomalyChanged) = Scrub(row, anomaly, options.Value.RejectionPayloadBytes);
                if (anomalyChanged) session.Store(anomaly!);
                if (rowChanged || anomalyChanged) scrubbed++;
                session.Store(row);
            }
            await session.SaveChangesAsync(ct);
        }

        if (scrubbed > 0)
        {
            logger.LogWarning("Scrubbed {Scrubbed} of {Checked} stored refusals kept before the current redaction rules (revision {Version}): " +
                "their payloads held secrets, which are now redacted; rotate any webhook secret, key or token that may have been exposed (docs/operations.md)",
                scrubbed, seen, Redaction.Version);
        }
        else if (seen > 0)
        {
            // Rows of an older revision that the current rules leave as they were: nothing was exposed by them.
            logger.LogInformation("Checked {Checked} stored refusals against the redaction rules of revision {Version}: none held a secret", seen, Redaction.Version);
        }
        return new ScrubResult(seen, scrubbed);
    }

    /// <summary>Redacts a stored refusal and its anomaly record's detail in place, marking the refusal with the current revision; says which changed.</summary>
    public static (bool Rejection, bool Anomaly) Scrub(Rejection row, AnomalyRecord? anomaly, int keepBytes)
    {
        row.Redaction = Redaction.Version;
        var secrets = new List<string>();
        var changed = false;
        if (row.Payload is { Length: > 0 } payload)
        {
            var redacted = Redaction.Payload(row.Method, row.Path, Encoding.UTF8.GetBytes(payload), Math.Max(keepBytes, Encoding.UTF8.GetByteCount(payload)));
            if (redacted.Changed)
            {
                row.Payload = redacted.Text;
                row.PayloadTruncated |= redacted.Truncated;
                changed = true;
            }
            secrets.AddRange(redacted.Secrets);
        }
        var detail = Redaction.Text(row.Detail, secrets);
        if (detail.Changed)
        {
            row.Detail = detail.Text;
            changed = true;
        }
        if (anomaly is not null && Redaction.Text(anomaly.Detail, secrets) is { Changed: true } anomalyDetail)
        {
            anomaly.Detail = anomalyDetail.Text!;
            return (changed, true);
        }
        return (changed, false);
    }
}
