namespace Ledger.Client;

/// <summary>Where the ledger is, who the client is, and how patiently it retries.</summary>
public sealed class LedgerClientOptions
{
    /// <summary>The ledger's address, e.g. <c>http://ledger:8080/</c>.</summary>
    public Uri? BaseAddress { get; set; }

    /// <summary>The bearer key: the admin key (register, cancel, claim, read), a worker key (claim) or a read key (read).
    /// Never logged.</summary>
    public string? Key { get; set; }

    /// <summary>The worker name sent with a claim when <see cref="LedgerClient.ClaimAsync"/> is not given one.</summary>
    public string Worker { get; set; } = Environment.MachineName;

    /// <summary>How often a session heartbeats. Default: a third of the lease, from the claim's answer.</summary>
    public TimeSpan? HeartbeatInterval { get; set; }

    public LedgerResilienceOptions Resilience { get; set; } = new();
}

/// <summary>The resilience pipeline on the client's named HttpClient.</summary>
public sealed class LedgerResilienceOptions
{
    /// <summary>Retries after the first attempt (each honours Retry-After when the ledger sends it).</summary>
    public int MaxRetryAttempts { get; set; } = 6;
    /// <summary>The first backoff delay; later ones grow exponentially, with jitter.</summary>
    public TimeSpan RetryDelay { get; set; } = TimeSpan.FromMilliseconds(500);
    public TimeSpan MaxRetryDelay { get; set; } = TimeSpan.FromSeconds(15);
    /// <summary>One attempt longer than this is abandoned (and retried).</summary>
    public TimeSpan AttemptTimeout { get; set; } = TimeSpan.FromSeconds(10);
    /// <summary>One call, every attempt and delay included.</summary>
    public TimeSpan TotalTimeout { get; set; } = TimeSpan.FromMinutes(2);
    /// <summary>Circuit breaker: the failure ratio over <see cref="BreakerSamplingDuration"/> that opens it...</summary>
    public double BreakerFailureRatio { get; set; } = 0.5;
    /// <summary>... once at least this many attempts were sampled.</summary>
    public int BreakerMinimumThroughput { get; set; } = 20;
    public TimeSpan BreakerSamplingDuration { get; set; } = TimeSpan.FromSeconds(30);
    /// <summary>How long an open circuit rejects attempts (those rejections are retried).</summary>
    public TimeSpan BreakerBreakDuration { get; set; } = TimeSpan.FromSeconds(5);
}
