using FluentValidation;
using FluentValidation.Results;
using Ledger.Contract;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Marten;
using Marten.Pagination;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Wolverine.Http;

namespace Ledger.Webhooks;

/// <summary>A new subscription: where to post, which kinds, and the secret deliveries are signed with.</summary>
public sealed record CreateSubscription
{
    public string? Url { get; init; }
    public List<string>? Kinds { get; init; }
    public string? Secret { get; init; }
    /// <summary>Narrows anomaly.flagged to these anomaly kinds (only with that kind).</summary>
    public List<string>? AnomalyKinds { get; init; }

    /// <summary>The anomaly kinds a run's fold raises, the ones that can be delivered.</summary>
    public static readonly IReadOnlyList<string> DeliverableAnomalyKinds =
        [Contract.AnomalyKinds.LateEvent, Contract.AnomalyKinds.LateCompletion, Contract.AnomalyKinds.CompletedBeforeResults, Contract.AnomalyKinds.AccountingMismatch, Contract.AnomalyKinds.StatusMismatch];

    /// <summary>The longest target URL.</summary>
    public const int MaxUrl = 2000;

    /// <summary>The shortest and the longest signing secret: at least 16 characters, so that a signature cannot be guessed.</summary>
    public const int MinSecret = 16;
    public const int MaxSecret = 500;

    public sealed class Validator : AbstractValidator<CreateSubscription>
    {
        public Validator()
        {
            RuleFor(s => s.Url).NotEmpty().MaximumLength(MaxUrl)
                .Must(url => WebhookTargets.FormError(url) is null)
                .WithMessage(s => WebhookTargets.FormError(s.Url) ?? "");
            RuleFor(s => s.Kinds).NotEmpty().WithMessage($"Name at least one kind: {string.Join(", ", WebhookKinds.All)}.");
            RuleForEach(s => s.Kinds).Must(k => WebhookKinds.All.Contains(k))
                .WithMessage((_, k) => $"'{k}' is not a delivery kind.")
                .WithState(_ => new RequestBody.AllowedValues(WebhookKinds.All));
            RuleFor(s => s.Secret).NotEmpty().MinimumLength(MinSecret).MaximumLength(MaxSecret)
                .WithMessage($"The secret must be {MinSecret} to {MaxSecret} characters.");
            RuleFor(s => s.AnomalyKinds).Must((s, kinds) => kinds is not { Count: > 0 } || (s.Kinds ?? []).Contains(WebhookKinds.AnomalyFlagged))
                .WithMessage("anomalyKinds narrows anomaly.flagged, which kinds does not name.");
            RuleForEach(s => s.AnomalyKinds).Must(k => DeliverableAnomalyKinds.Contains(k))
                .WithMessage((_, k) => $"'{k}' is not an anomaly kind that is delivered.")
                .WithState(_ => new RequestBody.AllowedValues(DeliverableAnomalyKinds));
        }
    }
}

public sealed record SubscriptionCreated(string SubscriptionId);

/// <summary>
/// A subscription as listed: never its secret. <c>state</c>: active, failing or paused (<see cref="SubscriptionStates"/>);
/// <c>failedDeliveries</c>: deliveries that used every attempt since it was last active.
/// </summary>
public sealed record SubscriptionView(string SubscriptionId, string Url, IReadOnlyList<string> Kinds, IReadOnlyList<string>? AnomalyKinds, DateTimeOffset CreatedAt,
    string State, DateTimeOffset? StateSince, int FailedDeliveries)
{
    public static SubscriptionView From(WebhookSubscription s) => new(s.Id, s.Url, s.Kinds, s.AnomalyKinds, s.CreatedAt, s.State, s.StateSince, s.FailedDeliveries);
}

public sealed record SubscriptionList(IReadOnlyList<SubscriptionView> Items, int Page, int PageSize, long Total);

public sealed record DeliveryView(
    string DeliveryId,
    string Kind,
    string? RunId,
    string? AnomalyKind,
    DateTimeOffset OccurredAt,
    DateTimeOffset CreatedAt,
    string State,
    IReadOnlyList<WebhookAttempt> Attempts)
{
    public static DeliveryView From(WebhookDelivery d) => new(d.Id, d.Kind, d.RunId, d.AnomalyKind, d.OccurredAt, d.CreatedAt, d.State, d.Attempts);
}

public sealed record DeliveryPage(IReadOnlyList<DeliveryView> Items, int Page, int PageSize, long Total);

public static class SubscriptionEndpoints
{
    [WolverinePost("/api/subscriptions", Name = "CreateSubscription")]
    [JsonBody(typeof(CreateSubscription))]
    [Accepts(Credential.AdminKey)]
    [Refuses(ProblemCodes.SubscriptionLimit)]
    [Tags("Webhooks")]
    [EndpointSummary("Subscribe a URL to signed deliveries of verdicts and anomalies (admin key)")]
    [ProducesResponseType<SubscriptionCreated>(201)]
    public static async Task<IResult> Post(HttpContext context, RequestGate gate, RejectionLog rejections, IValidator<CreateSubscription> validator,
        IDocumentStore store, WebhookSecrets secrets, IOptions<WebhookOptions> options, IHostEnvironment environment, TimeProvider clock)
    {
        var admission = await gate.Admit<CreateSubscription>(context, validator, [Role.Admin]);
        if (admission.Refusal is not null) return admission.Refusal;
        var request = admission.Request!;

        await using (var query = store.QuerySession())
        {
            if (await query.Query<WebhookSubscription>().CountAsync(context.RequestAborted) >= options.Value.MaxSubscriptions)
            {
                return await rejections.Refuse(context, Problem.Of(ProblemCodes.SubscriptionLimit,
                    detail: $"The ledger already holds {options.Value.MaxSubscriptions} webhook subscriptions (Ledger:Webhooks:MaxSubscriptions); delete one first."), admission.Raw);
            }
        }

        var uri = new Uri(request.Url!);
        var allowPrivate = options.Value.PrivateTargetsAllowed(environment);
        if (await WebhookTargets.AddressError(uri, allowPrivate, context.RequestAborted) is { } refused)
        {
            return await rejections.Refuse(context, RequestBody.Invalid([new ValidationFailure("url", refused)]), admission.Raw);
        }

        var subscription = new WebhookSubscription
        {
            Id = "sub_" + Guid.NewGuid().ToString("N"),
            Url = uri.AbsoluteUri,
            Kinds = request.Kinds!.Distinct().ToList(),
            AnomalyKinds = request.AnomalyKinds is { Count: > 0 } a ? a.Distinct().ToList() : null,
            ProtectedSecret = secrets.Protect(request.Secret!),
            CreatedAt = clock.GetUtcNow(),
            FromSequence = await store.Storage.Database.FetchHighestEventSequenceNumber(context.RequestAborted),
        };
        await using var session = store.LightweightSession();
        session.Insert(subscription);
        await session.SaveChangesAsync(context.RequestAborted);

        context.Response.Headers.Location = $"/api/subscriptions/{subscription.Id}";
        return Results.Json(new SubscriptionCreated(subscription.Id), LedgerJson.Options, statusCode: 201);
    }

    [WolverineGet("/api/subscriptions", Name = "ListSubscriptions")]
    [Accepts(Credential.AdminKey)]
    [Tags("Webhooks")]
    [EndpointSummary("The webhook subscriptions, oldest first, paged, each with its state (active, failing, paused), without their secrets (admin key)")]
    [ProducesResponseType<SubscriptionList>(200)]
    public static async Task<IResult> List(HttpContext context, Access access, IDocumentStore store, int? page, int? pageSize)
    {
        if (access.Require(context, Role.Admin) is { } denied) return denied.ToResult();
        var (number, size) = Paging.Normalize(page, pageSize);
        await using var session = store.QuerySession();
        var items = await session.Query<WebhookSubscription>().OrderBy(s => s.CreatedAt).ThenBy(s => s.Id)
            .ToPagedListAsync(number, size, context.RequestAborted);
        return Results.Json(new SubscriptionList(items.Select(SubscriptionView.From).ToList(), number, size, items.TotalItemCount), LedgerJson.Options);
    }

    [WolverineDelete("/api/subscriptions/{id}", Name = "DeleteSubscription")]
    [Accepts(Credential.AdminKey)]
    [Refuses(ProblemCodes.SubscriptionNotFound)]
    [Tags("Webhooks")]
    [EndpointSummary("Stop deliveries to a subscription; pending ones are dropped, its delivery log is kept (admin key)")]
    [ProducesResponseType(204)]
    public static async Task<IResult> Delete(string id, HttpContext context, Access access, RejectionLog rejections, IDocumentStore store)
    {
        if (access.Require(context, Role.Admin) is { } denied) return await rejections.Refuse(context, denied);
        await using var session = store.LightweightSession();
        if (await session.LoadAsync<WebhookSubscription>(id, context.RequestAborted) is null) return NotFound(id).ToResult();
        session.Delete<WebhookSubscription>(id);
        // Held deliveries (a paused subscription) will never be sent now: dropped, as pending ones are at their next attempt.
        foreach (var held in await session.Query<WebhookDelivery>().Where(d => d.SubscriptionId == id && d.State == WebhookDelivery.Held).ToListAsync(context.RequestAborted))
        {
            held.State = WebhookDelivery.Dropped;
            held.HeldBody = null;
            session.Store(held);
        }
        await session.SaveChangesAsync(context.RequestAborted);
        return Results.NoContent();
    }

    [WolverineGet("/api/subscriptions/{id}/deliveries", Name = "ListDeliveries")]
    [Accepts(Credential.AdminKey)]
    [Refuses(ProblemCodes.SubscriptionNotFound)]
    [Tags("Webhooks")]
    [EndpointSummary("A subscription's deliveries, newest first, each with every attempt (admin key)")]
    [ProducesResponseType<DeliveryPage>(200)]
    public static async Task<IResult> Deliveries(string id, HttpContext context, Access access, IDocumentStore store, int? page, int? pageSize)
    {
        if (access.Require(context, Role.Admin) is { } denied) return denied.ToResult();
        var (number, size) = Paging.Normalize(page, pageSize);
        await using var session = store.QuerySession();
        var items = await session.Query<WebhookDelivery>().Where(d => d.SubscriptionId == id)
            .OrderByDescending(d => d.CreatedAt).ThenBy(d => d.Id).ToPagedListAsync(number, size, context.RequestAborted);
        if (items.TotalItemCount == 0 && await session.LoadAsync<WebhookSubscription>(id, context.RequestAborted) is null) return NotFound(id).ToResult();
        return Results.Json(new DeliveryPage(items.Select(DeliveryView.From).ToList(), number, size, items.TotalItemCount), LedgerJson.Options);
    }

    private static Problem NotFound(string id) =>
        Problem.Of(ProblemCodes.SubscriptionNotFound, detail: $"No webhook subscription '{id}'.");
}
