using Marten;
using Wolverine;
using Wolverine.Marten;

namespace Ledger.Webhooks;

public static class WebhooksConfiguration
{
    public const string Queue = "webhooks";

    /// <summary>Documents of the webhooks: subscriptions and the delivery log.</summary>
    public static StoreOptions AddWebhooks(this StoreOptions options)
    {
        // Its state changes on several nodes at once (deliveries, resume): each change is a fresh read, checked at write.
        options.Schema.For<WebhookSubscription>().UseOptimisticConcurrency(true);
        // By creation time: pruning takes the oldest finished deliveries first.
        options.Schema.For<WebhookDelivery>().Index(d => d.CreatedAt);
        return options;
    }

    /// <summary>
    /// The relay: a Marten event subscription whose messages go out through Wolverine's outbox in the same
    /// transaction. It reads runs through the history's reader (bounded refolds), which reads through the
    /// store: resolved when the first page comes, once the store exists.
    /// </summary>
    public static MartenServiceCollectionExtensions.MartenConfigurationExpression AddWebhookRelay(
        this MartenServiceCollectionExtensions.MartenConfigurationExpression marten)
    {
        var relay = new WebhookRelay();
        marten.Services.ConfigureMarten((services, _) => relay.ReadRunsWith(() => services.GetRequiredService<Ledger.Runs.RunHistoryReader>()));
        return marten.SubscribeToEvents(relay);
    }

    public static IServiceCollection AddWebhooks(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<WebhookOptions>().Bind(configuration.GetSection(WebhookOptions.Section))
            .Validate(o => o.MaxAttempts is >= 1 and <= 100, "Ledger:Webhooks:MaxAttempts must be 1 to 100.")
            .Validate(o => o.RetryWindowSeconds >= 1, "Ledger:Webhooks:RetryWindowSeconds must be at least 1.")
            .Validate(o => o.TimeoutSeconds is >= 1 and <= 300, "Ledger:Webhooks:TimeoutSeconds must be 1 to 300.")
            .Validate(o => o.Concurrency is >= 1 and <= 256, "Ledger:Webhooks:Concurrency must be 1 to 256.")
            .Validate(o => string.IsNullOrWhiteSpace(o.Proxy) || Uri.TryCreate(o.Proxy, UriKind.Absolute, out var p) && p.Scheme is "http" or "https",
                "Ledger:Webhooks:Proxy must be an absolute http:// or https:// URL.")
            .Validate(o => o.MaxSubscriptions is >= 1 and <= 100_000, "Ledger:Webhooks:MaxSubscriptions must be 1 to 100000.")
            .Validate(o => o.PauseAfterFailedDeliveries is >= 1 and <= 10_000, "Ledger:Webhooks:PauseAfterFailedDeliveries must be 1 to 10000.")
            .ValidateOnStart();
        services.AddSingleton<WebhookSecrets>();
        services.AddSingleton<WebhookSender>();
        return services;
    }

    /// <summary>
    /// Deliveries are messages of a durable local queue (stored in PostgreSQL: they survive a
    /// kill -9), attempted on a bounded number of slots, retried on a schedule that is also stored.
    /// </summary>
    public static WolverineOptions AddWebhooks(this WolverineOptions options, IConfiguration configuration)
    {
        var webhooks = configuration.GetSection(WebhookOptions.Section).Get<WebhookOptions>() ?? new WebhookOptions();
        options.PublishMessage<DeliverWebhook>().ToLocalQueue(Queue);
        // A failed attempt is not an exception: the sender logs it in one line and schedules the next one itself (WebhookSender).
        options.LocalQueue(Queue).UseDurableInbox().MaximumParallelMessages(Math.Max(1, webhooks.Concurrency));
        return options;
    }
}
