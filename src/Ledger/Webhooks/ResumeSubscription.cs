using Ledger.Contract;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Marten;
using Microsoft.AspNetCore.Mvc;
using Wolverine.Http;
using Wolverine.Marten;

namespace Ledger.Webhooks;

/// <summary>The subscription after <c>resume</c>, and how many held deliveries were sent again.</summary>
public sealed record SubscriptionResumed(string SubscriptionId, string State, int Resent);

public static class ResumeSubscriptionEndpoint
{
    [WolverinePost("/api/subscriptions/{id}/resume", Name = "ResumeSubscription")]
    [Accepts(Credential.AdminKey)]
    [Refuses(ProblemCodes.SubscriptionNotFound)]
    [Tags("Webhooks")]
    [EndpointSummary("Resume a paused or failing subscription: it is active again, and the deliveries held while it was paused are sent, each with a whole retry window (admin key)")]
    [ProducesResponseType<SubscriptionResumed>(200)]
    public static async Task<IResult> Post(string id, HttpContext context, Access access, RejectionLog rejections, IDocumentStore store,
        IMartenOutbox outbox, TimeProvider clock, ILogger<WebhookSender> logger)
    {
        if (access.Require(context, Role.Admin) is { } denied) return await rejections.Refuse(context, denied);
        var now = clock.GetUtcNow();
        var before = SubscriptionStates.Active;
        var subscription = await SubscriptionHealth.UpdateAsync(store, id, s =>
        {
            before = s.State;
            if (s.State == SubscriptionStates.Active) return false;
            s.State = SubscriptionStates.Active;
            s.StateSince = now;
            s.FailedDeliveries = 0;
            return true;
        }, context.RequestAborted);
        if (subscription is null)
        {
            return Problem.Of(ProblemCodes.SubscriptionNotFound, detail: $"No webhook subscription '{id}'.").ToResult();
        }

        // Held deliveries are released even when the subscription was active already (one held in a race with an earlier resume).
        var resent = await SubscriptionHealth.ReleaseHeldAsync(store, outbox, id, context.RequestAborted);
        if (before != SubscriptionStates.Active || resent > 0)
        {
            logger.LogInformation("Subscription {SubscriptionId} resumed (it was {State}); {Resent} held deliveries sent again", id, before, resent);
        }
        return Results.Json(new SubscriptionResumed(id, subscription.State, resent), LedgerJson.Options);
    }
}
