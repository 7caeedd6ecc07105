using Marten;
using Wolverine;
using Wolverine.Marten;

namespace Ledger.Webhooks;

/// <summary>The transitions of a subscription's state (<see cref="SubscriptionStates"/>), one definition for the sender and the API.</summary>
public static class SubscriptionHealth
{
    /// <summary>
    /// Loads the subscription, lets <paramref name="change"/> decide (false: nothing to write) and
    /// stores it under optimistic concurrency, again from a fresh read when another node changed it
    /// meanwhile. Returns the subscription as stored, or null when it does not exist.
    /// </summary>
    public static async Task<WebhookSubscription?> UpdateAsync(IDocumentStore store, string id,
        Func<WebhookSubscription, bool> change, CancellationToken ct = default)
    {
        for (var attempt = 1; ; attempt++)
        {
            await using var session = store.LightweightSession();
            var subscription = await session.LoadAsync<WebhookSubscription>(id, ct);
            if (subscription is null || !change(subscription)) return subscription;
            session.Store(subscription);
            try
            {
                await session.SaveChangesAsync(ct);
                return subscription;
            }
            catch (JasperFx.ConcurrencyException) when (attempt < 10)
            {
            }
        }
    }

    /// <summary>
    /// Sends every held delivery of the subscription again, each with a whole retry window and its
    /// body unchanged: the delivery log and the outbox messages are written in one transaction.
    /// </summary>
    public static async Task<int> ReleaseHeldAsync(IDocumentStore store, IMessageBus bus, string subscriptionId, CancellationToken ct)
    {
        var released = 0;
        while (true)
        {
            await using var session = store.LightweightSession();
            var held = await session.Query<WebhookDelivery>()
                .Where(d => d.SubscriptionId == subscriptionId && d.State == WebhookDelivery.Held)
                .OrderBy(d => d.CreatedAt).Take(500).ToListAsync(ct);
            if (held.Count == 0) return released;
            var outbox = new List<DeliverWebhook>();
            foreach (var delivery in held)
            {
                outbox.Add(new DeliverWebhook(delivery.Id, subscriptionId, delivery.HeldBody ?? ""));
                delivery.State = WebhookDelivery.Pending;
                delivery.AttemptsBeforeResume = delivery.Attempts.Count;
                delivery.HeldBody = null;
                session.Store(delivery);
            }
            if (bus is IMartenOutbox martenOutbox)
            {
                martenOutbox.Enroll(session);
                foreach (var message in outbox) await martenOutbox.PublishAsync(message);
                await session.SaveChangesAsync(ct);
            }
            else
            {
                await session.SaveChangesAsync(ct);
                foreach (var message in outbox) await bus.PublishAsync(message);
            }
            released += held.Count;
        }
    }
}

/// <summary>Waits in words for a log line: 7 s, 14 min 3 s, 2 h 5 min.</summary>
public static class Waits
{
    public static string Describe(TimeSpan wait) => wait.TotalSeconds switch
    {
        < 10 => $"{wait.TotalSeconds:0.#} s",
        < 60 => $"{wait.TotalSeconds:0} s",
        < 3600 => $"{(int)wait.TotalMinutes} min {wait.Seconds} s",
        _ => $"{(int)wait.TotalHours} h {wait.Minutes} min",
    };
}
