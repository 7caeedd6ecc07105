using System.Net;
using Microsoft.Extensions.Http.Resilience;
using Polly;
using Polly.CircuitBreaker;
using Polly.Timeout;

namespace Ledger.Client;

/// <summary>
/// The one place that decides what is retried. Outermost first: a timeout for the whole call,
/// the retry, a circuit breaker, and a timeout for each attempt.
/// </summary>
public static class LedgerResilience
{
    public const string PipelineName = "ledger";

    public static void Configure(ResiliencePipelineBuilder<HttpResponseMessage> pipeline, LedgerResilienceOptions options)
    {
        pipeline.AddTimeout(new HttpTimeoutStrategyOptions { Name = "ledger-total", Timeout = options.TotalTimeout });

        // POST is retried on purpose. The standard HTTP advice is to retry only safe methods, but
        // every request this client sends is idempotent by construction: events carry an eventId
        // (a recorded one is answered as a duplicate), a registration always carries the runId the
        // client generated (the same definition again is answered as the first time), and a claim
        // always carries the claimId it generated (the same claim again answers the same lease).
        // A request that was processed before the answer was lost can therefore be sent again, and
        // ShouldHandle below deliberately ignores the method.
        pipeline.AddRetry(new HttpRetryStrategyOptions
        {
            Name = "ledger-retry",
            MaxRetryAttempts = options.MaxRetryAttempts,
            BackoffType = DelayBackoffType.Exponential,
            UseJitter = true,
            Delay = options.RetryDelay,
            MaxDelay = options.MaxRetryDelay,
            // 429 and 503 say when to come back; that delay is used instead of the backoff.
            ShouldRetryAfterHeader = true,
            ShouldHandle = args => ValueTask.FromResult(IsRetryable(args.Outcome)),
        });

        pipeline.AddCircuitBreaker(new HttpCircuitBreakerStrategyOptions
        {
            Name = "ledger-breaker",
            FailureRatio = options.BreakerFailureRatio,
            MinimumThroughput = options.BreakerMinimumThroughput,
            SamplingDuration = options.BreakerSamplingDuration,
            BreakDuration = options.BreakerBreakDuration,
            ShouldHandle = args => ValueTask.FromResult(IsRetryable(args.Outcome)),
        });

        pipeline.AddTimeout(new HttpTimeoutStrategyOptions { Name = "ledger-attempt", Timeout = options.AttemptTimeout });
    }

    /// <summary>
    /// Retry what the ledger says is worth retrying (429, 503, 500: <c>retryable: true</c>), what a
    /// proxy in front of it says (502, 504, 408), a dropped or refused connection, and the
    /// rejections of this pipeline itself: an attempt that timed out and an open circuit.
    /// Every other answer (<c>retryable: false</c>) goes straight back to the caller.
    /// </summary>
    public static bool IsRetryable(Outcome<HttpResponseMessage> outcome) => outcome switch
    {
        { Exception: HttpRequestException or TimeoutRejectedException or BrokenCircuitException } => true,
        { Exception: not null } => false,
        { Result: { } response } => response.StatusCode is HttpStatusCode.TooManyRequests or HttpStatusCode.ServiceUnavailable
            or HttpStatusCode.InternalServerError or HttpStatusCode.BadGateway or HttpStatusCode.GatewayTimeout
            or HttpStatusCode.RequestTimeout,
        _ => false,
    };
}
