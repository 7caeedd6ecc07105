using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using Marten;
using Microsoft.Extensions.Options;
using Wolverine;

namespace Ledger.Webhooks;

/// <summary>Wolverine's handler of the durable local queue "webhooks": one attempt per message.</summary>
public static class DeliverWebhookHandler
{
    public static Task Handle(DeliverWebhook message, WebhookSender sender, IMessageContext context, CancellationToken cancellationToken) =>
        sender.AttemptAsync(message, context, cancellationToken);
}

/// <summary>
/// Makes one attempt of one delivery and records it in the delivery log. Each attempt has its
/// own timeout, and attempts run on a bounded number of slots, so a subscriber that never answers
/// holds one slot for at most the timeout and delays nobody else. A failed attempt is an expected
/// condition, not an error: it is logged as one line and the next attempt is scheduled (durably,
/// in Wolverine's inbox) after the wait the retry window gives it.
/// </summary>
public sealed class WebhookSender : IDisposable
{
    private readonly IDocumentStore _store;
    private readonly WebhookSecrets _secrets;
    private readonly WebhookOptions _options;
    private readonly ILogger<WebhookSender> _logger;
    private readonly HttpClient _http;

    public WebhookSender(IDocumentStore store, WebhookSecrets secrets, IOptions<WebhookOptions> options, IHostEnvironment environment,
        ILogger<WebhookSender> logger)
    {
        _store = store;
        _secrets = secrets;
        _options = options.Value;
        _logger = logger;
        var allowPrivate = _options.PrivateTargetsAllowed(environment);
        // No redirects, no proxy unless configured, the target checked at connect time (WebhookTargets).
        _http = new HttpClient(WebhookTargets.Handler(_options, allowPrivate))
        {
            Timeout = Timeout.InfiniteTimeSpan,
        };
        _http.DefaultRequestHeaders.UserAgent.ParseAdd("run-ledger-webhooks/1");
    }

    public async Task AttemptAsync(DeliverWebhook message, IMessageBus bus, CancellationToken cancellationToken)
    {
        await using var session = _store.LightweightSession();
        var delivery = await session.LoadAsync<WebhookDelivery>(message.DeliveryId, cancellationToken);
        if (delivery is null || delivery.State != WebhookDelivery.Pending) return; // a duplicate of a finished delivery
        var subscription = await session.LoadAsync<WebhookSubscription>(message.SubscriptionId, cancellationToken);
        if (subscription is null)
        {
            delivery.State = WebhookDelivery.Dropped;
            session.Store(delivery);
            await session.SaveChangesAsync(cancellationToken);
            return;
        }
        if (subscription.State == SubscriptionStates.Paused)
        {
            await HoldAsync(delivery, message, bus, cancellationToken);
            return;
        }

        var body = Encoding.UTF8.GetBytes(message.Body);
        var number = delivery.Attempts.Count + 1;
        var at = DateTimeOffset.UtcNow;
        var started = Stopwatch.GetTimestamp();
        int? status = null;
        string? error = null;
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, subscription.Url) { Content = new ByteArrayContent(body) };
            request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json") { CharSet = "utf-8" };
            request.Headers.Add(WebhookSignature.DeliveryHeader, delivery.Id);
            request.Headers.Add(WebhookSignature.SignatureHeader, WebhookSignature.Sign(_secrets.Unprotect(subscription.ProtectedSecret), body));
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(_options.TimeoutSeconds));
            using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
            status = (int)response.StatusCode;
            if (status is < 200 or >= 300) error = $"answered {status}";
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            error = $"no answer within {_options.TimeoutSeconds}s";
        }
        catch (HttpRequestException e)
        {
            error = e.InnerException is { } inner && !e.Message.Contains(inner.Message, StringComparison.Ordinal) ? $"{e.Message} ({inner.Message})" : e.Message;
        }

        var delivered = error is null;
        var finished = DateTimeOffset.UtcNow;
        // The attempts of this round: a delivery resumed after a pause gets a whole retry window again.
        var round = number - delivery.AttemptsBeforeResume;
        delivery.Attempts.Add(new WebhookAttempt(number, at, status, error, (long)Stopwatch.GetElapsedTime(started).TotalMilliseconds));
        delivery.State = delivered ? WebhookDelivery.Delivered : round >= _options.MaxAttempts ? WebhookDelivery.Failed : WebhookDelivery.Pending;
        if (delivery.State != WebhookDelivery.Pending) delivery.FinishedAt = finished;
        session.Store(delivery);
        // Recorded even when the host is stopping: the attempt was made.
        await session.SaveChangesAsync(CancellationToken.None);

        if (delivered)
        {
            if (subscription.State == SubscriptionStates.Failing) await RecoveredAsync(subscription.Id, finished);
        }
        else if (delivery.State == WebhookDelivery.Failed)
        {
            var (state, failed, pausedNow) = await GaveUpAsync(subscription.Id, finished);
            var consequence = state switch
            {
                SubscriptionStates.Failing => $"subscription {subscription.Id} is failing ({failed} of {_options.PauseAfterFailedDeliveries} failed deliveries pause it)",
                _ when pausedNow => $"subscription {subscription.Id} is now paused after {_options.PauseAfterFailedDeliveries} failed deliveries: " +
                                    $"its deliveries are held until POST /api/subscriptions/{subscription.Id}/resume",
                _ => $"subscription {subscription.Id} is {state}",
            };
            _logger.LogWarning("Webhook delivery {DeliveryId} to subscription {SubscriptionId}: attempt {Attempt} of {MaxAttempts} failed ({Error}); no further try, {Consequence}",
                delivery.Id, subscription.Id, round, _options.MaxAttempts, error, consequence);
        }
        else
        {
            var wait = _options.DelayAfter(round) ?? TimeSpan.FromSeconds(1);
            await bus.ScheduleAsync(message, wait);
            _logger.LogWarning(
                "Webhook delivery {DeliveryId} to subscription {SubscriptionId}: attempt {Attempt} of {MaxAttempts} failed ({Error}); next try in {Wait} at {NextAt}",
                delivery.Id, subscription.Id, round, _options.MaxAttempts, error, Waits.Describe(wait), (finished + wait).UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss'Z'"));
        }
    }

    /// <summary>Keeps a delivery of a paused subscription, body and all, for <c>resume</c>; sends it at once if the subscription was resumed meanwhile.</summary>
    private async Task HoldAsync(WebhookDelivery delivery, DeliverWebhook message, IMessageBus bus, CancellationToken ct)
    {
        await using (var session = _store.LightweightSession())
        {
            delivery.State = WebhookDelivery.Held;
            delivery.HeldBody = message.Body;
            session.Store(delivery);
            await session.SaveChangesAsync(CancellationToken.None);
        }
        _logger.LogDebug("Webhook delivery {DeliveryId} held: subscription {SubscriptionId} is paused", delivery.Id, message.SubscriptionId);

        // Resumed between our read and our write: the resume did not see this delivery as held.
        await using var check = _store.QuerySession();
        if (await check.LoadAsync<WebhookSubscription>(message.SubscriptionId, ct) is { State: not SubscriptionStates.Paused })
        {
            await SubscriptionHealth.ReleaseHeldAsync(_store, bus, message.SubscriptionId, ct);
        }
    }

    /// <summary>A delivery used every attempt: the subscription is failing, or paused once enough of them did.</summary>
    private async Task<(string State, int Failed, bool PausedNow)> GaveUpAsync(string subscriptionId, DateTimeOffset at)
    {
        var pausedNow = false;
        var updated = await SubscriptionHealth.UpdateAsync(_store, subscriptionId, s =>
        {
            pausedNow = false;
            if (s.State == SubscriptionStates.Paused) return false;
            // Counted under optimistic concurrency: deliveries giving up at once on several slots or nodes each count.
            s.FailedDeliveries++;
            if (s.State == SubscriptionStates.Active)
            {
                s.State = SubscriptionStates.Failing;
                s.StateSince = at;
            }
            if (s.FailedDeliveries >= _options.PauseAfterFailedDeliveries)
            {
                s.State = SubscriptionStates.Paused;
                s.StateSince = at;
                pausedNow = true;
            }
            return true;
        });
        return (updated?.State ?? SubscriptionStates.Failing, updated?.FailedDeliveries ?? 1, pausedNow);
    }

    /// <summary>A delivered attempt makes a failing subscription active again.</summary>
    private Task RecoveredAsync(string subscriptionId, DateTimeOffset at) =>
        SubscriptionHealth.UpdateAsync(_store, subscriptionId, s =>
        {
            if (s.State != SubscriptionStates.Failing) return false;
            s.State = SubscriptionStates.Active;
            s.StateSince = at;
            s.FailedDeliveries = 0;
            _logger.LogInformation("Subscription {SubscriptionId} is active again: a delivery succeeded", subscriptionId);
            return true;
        });

    public void Dispose() => _http.Dispose();
}
