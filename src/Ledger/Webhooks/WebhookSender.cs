using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using Marten;
using Microsoft.Extensions.Options;
using Wolverine;

namespace Ledger.Webhooks;

/// <summary>An attempt that did not get a 2xx in time: Wolverine schedules the next one (durably) by the retry policy.</summary>
public sealed class WebhookAttemptFailed(string deliveryId, string why) : Exception($"Delivery {deliveryId} failed: {why}");

/// <summary>Wolverine's handler of the durable local queue "webhooks": one attempt per message.</summary>
public static class DeliverWebhookHandler
{
    public static Task Handle(DeliverWebhook message, Envelope envelope, WebhookSender sender, CancellationToken cancellationToken) =>
        sender.AttemptAsync(message, cancellationToken);
}

/// <summary>
/// Makes one attempt of one delivery and records it in the delivery log. Each attempt has its
/// own timeout, and attempts run on a bounded number of slots, so a subscriber that never answers
/// holds one slot for at most the timeout and delays nobody else.
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

    public async Task AttemptAsync(DeliverWebhook message, CancellationToken cancellationToken)
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
            error = e.InnerException is { } inner ? $"{e.Message} ({inner.Message})" : e.Message;
        }

        var delivered = error is null;
        delivery.Attempts.Add(new WebhookAttempt(number, at, status, error, (long)Stopwatch.GetElapsedTime(started).TotalMilliseconds));
        delivery.State = delivered ? WebhookDelivery.Delivered : number >= _options.MaxAttempts ? WebhookDelivery.Failed : WebhookDelivery.Pending;
        session.Store(delivery);
        // Recorded even when the host is stopping: the attempt was made.
        await session.SaveChangesAsync(CancellationToken.None);

        if (delivery.State == WebhookDelivery.Failed)
        {
            _logger.LogWarning("Webhook delivery {DeliveryId} to subscription {SubscriptionId} gave up after {Attempts} attempts: {Error}",
                delivery.Id, subscription.Id, number, error);
        }
        else if (!delivered)
        {
            throw new WebhookAttemptFailed(delivery.Id, error!);
        }
    }

    public void Dispose() => _http.Dispose();
}
