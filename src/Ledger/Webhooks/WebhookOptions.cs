namespace Ledger.Webhooks;

/// <summary>Bound from <c>Ledger:Webhooks</c> (environment <c>Ledger__Webhooks__*</c>).</summary>
public sealed class WebhookOptions
{
    public const string Section = "Ledger:Webhooks";

    /// <summary>
    /// Whether subscriber URLs may resolve to loopback, private or link-local addresses. Unset:
    /// allowed in Development only; set it to true or false to decide explicitly.
    /// </summary>
    public bool? AllowPrivateTargets { get; set; }

    /// <summary>The rule itself, for the subscription check and the sender's connect-time check alike.</summary>
    public bool PrivateTargetsAllowed(Microsoft.Extensions.Hosting.IHostEnvironment environment) =>
        AllowPrivateTargets ?? environment.IsDevelopment();

    /// <summary>
    /// An HTTP proxy deliveries go through (e.g. http://proxy:3128). Unset: none, whatever the
    /// environment's HTTP_PROXY/HTTPS_PROXY say, so that the connect-time check sees the target.
    /// </summary>
    public string? Proxy { get; set; }

    /// <summary>How many times one delivery is attempted in all (the first try included).</summary>
    public int MaxAttempts { get; set; } = 10;

    /// <summary>
    /// The time from the first attempt to the last: the waits between attempts double, and
    /// together they add up to this window (10 attempts over 3600 s: 7 s, 14 s, ... 30 min).
    /// </summary>
    public int RetryWindowSeconds { get; set; } = 3600;

    /// <summary>How long one attempt may take before it counts as failed (a subscriber that never answers).</summary>
    public int TimeoutSeconds { get; set; } = 10;

    /// <summary>How many deliveries are attempted at once on one node; a slow subscriber holds one slot at a time.</summary>
    public int Concurrency { get; set; } = 8;

    /// <summary>The most subscriptions the ledger holds; one more is refused (<c>409 subscription-limit</c>).</summary>
    public int MaxSubscriptions { get; set; } = 100;

    /// <summary>How long a finished delivery (delivered, failed, dropped) stays in the delivery log; a pending one is never pruned. Zero keeps them all.</summary>
    public TimeSpan KeepDeliveriesFor { get; set; } = TimeSpan.FromDays(30);

    /// <summary>
    /// A failing subscription (one of its deliveries used every attempt) is paused when this many of
    /// its deliveries have used every attempt since it started failing; its deliveries are then held
    /// until it is resumed.
    /// </summary>
    public int PauseAfterFailedDeliveries { get; set; } = 3;

    /// <summary>The wait after attempt <paramref name="attempt"/> (1-based) of a round of attempts; null after the last.</summary>
    public TimeSpan? DelayAfter(int attempt) => RetryDelays() is var delays && attempt >= 1 && attempt <= delays.Length ? delays[attempt - 1] : null;

    /// <summary>The waits between attempts: MaxAttempts - 1 of them, doubling, summing to the window.</summary>
    public TimeSpan[] RetryDelays()
    {
        var retries = Math.Max(0, MaxAttempts - 1);
        if (retries == 0) return [];
        var first = Math.Max(0.001, RetryWindowSeconds / (Math.Pow(2, retries) - 1));
        return Enumerable.Range(0, retries).Select(i => TimeSpan.FromSeconds(first * Math.Pow(2, i))).ToArray();
    }
}
