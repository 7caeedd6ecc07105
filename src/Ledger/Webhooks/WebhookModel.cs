using System.Security.Cryptography;
using System.Text;
using Marten.Schema;

namespace Ledger.Webhooks;

public static class WebhookKinds
{
    public const string RunSucceeded = "run.succeeded";
    public const string RunFailed = "run.failed";
    public const string RunLost = "run.lost";
    public const string RunCancelled = "run.cancelled";
    public const string RunReclassified = "run.reclassified";
    public const string AnomalyFlagged = "anomaly.flagged";

    public static readonly IReadOnlyList<string> All = [RunSucceeded, RunFailed, RunLost, RunCancelled, RunReclassified, AnomalyFlagged];
}

/// <summary>A subscriber: where deliveries go, which kinds, and its secret (Data Protection ciphertext, never returned).</summary>
public sealed class WebhookSubscription
{
    public string Id { get; set; } = "";
    public string Url { get; set; } = "";
    public List<string> Kinds { get; set; } = [];
    /// <summary>Narrows anomaly.flagged to these anomaly kinds; null or empty: every kind.</summary>
    public List<string>? AnomalyKinds { get; set; }
    public string ProtectedSecret { get; set; } = "";
    public DateTimeOffset CreatedAt { get; set; }
    /// <summary>The last event sequence committed when the subscription was made: it is told of what happens after.</summary>
    public long FromSequence { get; set; }
    /// <summary><see cref="SubscriptionStates"/>: active, failing (a delivery used every attempt), paused (deliveries held).</summary>
    public string State { get; set; } = SubscriptionStates.Active;
    /// <summary>When the subscription entered its state; null while it has always been active.</summary>
    public DateTimeOffset? StateSince { get; set; }
    /// <summary>Deliveries that used every attempt since it was last active (0 while active).</summary>
    public int FailedDeliveries { get; set; }

    public bool Wants(string kind, string? anomalyKind) =>
        Kinds.Contains(kind) && (kind != WebhookKinds.AnomalyFlagged || AnomalyKinds is not { Count: > 0 } || AnomalyKinds.Contains(anomalyKind!));
}

/// <summary>
/// A subscriber's health. A delivery that used every attempt (its whole retry window) makes the
/// subscription failing; after <see cref="WebhookOptions.PauseAfterFailedDeliveries"/> of them while
/// failing it is paused: nothing is sent to it, and what comes due is held until
/// <c>POST /api/subscriptions/{id}/resume</c>. A delivered attempt makes a failing subscription active again.
/// </summary>
public static class SubscriptionStates
{
    public const string Active = "active";
    public const string Failing = "failing";
    public const string Paused = "paused";

    public static readonly IReadOnlyList<string> All = [Active, Failing, Paused];
}

public sealed record WebhookAttempt(int Number, DateTimeOffset At, int? StatusCode, string? Error, long DurationMs);

/// <summary>
/// The delivery log: one document per delivery, written in the same transaction as the outbox
/// message that carries it, and updated with every attempt (the outbox forgets delivered messages).
/// </summary>
public sealed class WebhookDelivery
{
    /// <summary>The deliveryId: derived from the subscription and the event (or anomaly), so a duplicate carries the same one.</summary>
    public string Id { get; set; } = "";
    [DuplicateField]
    public string SubscriptionId { get; set; } = "";
    public required string Kind { get; set; }
    public string? RunId { get; set; }
    public string? AnomalyKind { get; set; }
    public DateTimeOffset OccurredAt { get; set; }
    public DateTimeOffset CreatedAt { get; set; }
    /// <summary>pending, delivered, failed (every attempt used), held (its subscription is paused), dropped (the subscription was deleted).</summary>
    public string State { get; set; } = Pending;
    public List<WebhookAttempt> Attempts { get; set; } = [];
    /// <summary>When it was delivered or gave up.</summary>
    public DateTimeOffset? FinishedAt { get; set; }
    /// <summary>The attempts made before its subscription was last resumed: a resumed delivery gets a whole retry window again.</summary>
    public int AttemptsBeforeResume { get; set; }
    /// <summary>The exact body, kept while the delivery is held, so that it is sent unchanged on resume.</summary>
    public string? HeldBody { get; set; }

    public const string Pending = "pending";
    public const string Delivered = "delivered";
    public const string Failed = "failed";
    public const string Held = "held";
    public const string Dropped = "dropped";

    /// <summary>States of a delivery that may still be sent (pending, or held while its subscription is paused): never pruned.</summary>
    public static readonly IReadOnlyList<string> Unfinished = [Pending, Held];

    /// <summary>Deterministic: the same subscription and source give the same id on every node and every replay.</summary>
    public static string IdFor(string subscriptionId, string source)
    {
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes(subscriptionId + "\n" + source));
        return "dlv_" + Convert.ToHexStringLower(hash.AsSpan(0, 16));
    }
}

/// <summary>The JSON body of a delivery, as pinned: field names are the contract.</summary>
public sealed record WebhookPayload(
    string DeliveryId,
    string Kind,
    string? RunId,
    string? Status,
    string? Reason,
    string? AnomalyKind,
    DateTimeOffset OccurredAt);

/// <summary>The durable message that carries one delivery; the body is fixed when it is enqueued, so every retry sends the same bytes.</summary>
public sealed record DeliverWebhook(string DeliveryId, string SubscriptionId, string Body);

public static class WebhookSignature
{
    public const string DeliveryHeader = "X-Ledger-Delivery";
    public const string SignatureHeader = "X-Ledger-Signature";

    public static string Sign(string secret, byte[] body) =>
        "sha256=" + Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), body));
}
