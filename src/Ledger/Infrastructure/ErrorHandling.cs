using System.Text.Json;
using Ledger.Contract;
using Microsoft.AspNetCore.Routing.Patterns;
using Microsoft.AspNetCore.Routing.Template;

namespace Ledger.Infrastructure;

/// <summary>
/// The last line of the error contract: whatever escapes an endpoint, and every error status
/// answered without a body (by routing, the framework or a filter), still leaves as problem
/// details. Database outages are retryable 503s; only a genuine bug is a 500.
/// </summary>
public static class ErrorHandling
{
    public static IApplicationBuilder UseLedgerErrors(this IApplicationBuilder app) => app.Use(async (context, next) =>
    {
        try
        {
            await next(context);
            if (context.Response is { StatusCode: >= 400, HasStarted: false, ContentLength: null } response
                && string.IsNullOrEmpty(response.ContentType))
            {
                await Answer(context, ForBareStatus(context));
            }
            if (context.Items[typeof(Problem)] is Problem { Status: 401 } unauthenticated)
            {
                await context.RequestServices.GetRequiredService<Ledger.Forensics.CountedRefusals>()
                    .Observe(context, unauthenticated);
            }
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away; there is nobody to answer.
        }
        catch (Exception e) when (!context.Response.HasStarted)
        {
            var problem = Translate(e, context);
            context.Response.Clear();
            await Answer(context, problem);
        }
        finally
        {
            // Every refusal answered, by its problem code (ledger_refusals_total), unauthenticated ones included.
            if (context.Items[typeof(Problem)] is Problem answered)
            {
                context.RequestServices.GetService<Ledger.Operations.LedgerMetrics>()?.Refused(answered.Code);
            }
        }
    });

    /// <summary>
    /// Problem details for the API; the same refusal as an HTML page for the console's paths, headed by
    /// <paramref name="heading"/> when the page says it better than the problem's title.
    /// </summary>
    public static Task Answer(HttpContext context, Problem problem, string? heading = null)
    {
        if (!Ledger.Web.ConsolePaths.IsConsole(context)) return problem.ToResult().ExecuteAsync(context);
        problem.ApplyTo(context);
        var detail = problem.Errors is { Count: > 0 } errors
            ? string.Join(" ", errors.Select(e => $"{e.Key}: {string.Join(" ", e.Value)}"))
            : problem.Detail ?? "";
        return Ledger.Web.ConsoleHtml.WriteError(context, problem.Status, heading ?? problem.Title, detail);
    }

    private static Problem ForBareStatus(HttpContext context) => context.Response.StatusCode switch
    {
        404 => NoSuchEndpoint(context),
        405 => Problem.Of(ProblemCodes.MethodNotAllowed, detail: $"{context.Request.Method} is not allowed on {context.Request.Path}."),
        413 => Problem.Of(ProblemCodes.PayloadTooLarge),
        415 => Problem.Of(ProblemCodes.UnsupportedMediaType),
        401 => Problem.Of(ProblemCodes.MissingCredentials),
        403 => Problem.Of(ProblemCodes.Forbidden),
        >= 500 => Problem.Of(ProblemCodes.Internal),
        _ => Problem.Of(ProblemCodes.MalformedJson),
    } with { Status = context.Response.StatusCode };

    private static Problem Translate(Exception e, HttpContext context)
    {
        var logger = context.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger("Ledger.Errors");
        switch (e)
        {
            case ProblemException p:
                return p.Problem;
            case BadHttpRequestException { StatusCode: 413 }:
                return Problem.Of(ProblemCodes.PayloadTooLarge, detail: e.Message);
            case BadHttpRequestException or JsonException:
                return Problem.Of(ProblemCodes.MalformedJson, e.Message);
            case EmbeddedPostgresUnavailableException:
            case var _ when DatabaseFailures.IsTransient(e):
                var ambiguous = e is CommitOutcomeUnknownException;
                logger.LogWarning(e, "Database unavailable while serving {Method} {Path} ({Phase})", context.Request.Method,
                    context.Request.Path, ambiguous ? "during the commit: outcome unknown" : "before any commit");
                return Problem.Of(ProblemCodes.DatabaseUnavailable, detail: ambiguous
                    ? "The database failed while this request was being committed, so it may or may not have been recorded. Resending the same request with the same eventId is safe: what was recorded is answered as a duplicate."
                    : "Nothing from this request was recorded; retry after the indicated delay.")
                    with { RetryAfterSeconds = 2 };
            default:
                logger.LogError(e, "Unhandled error serving {Method} {Path}", context.Request.Method, context.Request.Path);
                return Problem.Of(ProblemCodes.Internal, detail: "This is a defect in the ledger, not in the request; it has been logged.");
        }
    }

    /// <summary>
    /// The answer for a request no endpoint took: 405 with the methods the path does take, or 404.
    /// The fallback matches every path, file-like ones (/.env, /x.php) included.
    /// </summary>
    public static IEndpointConventionBuilder MapProblemFallback(this WebApplication app) =>
        app.MapFallback("{*path}", async (HttpContext context, EndpointDataSource endpoints) =>
        {
            var allowed = AllowedMethods(endpoints, context.Request.Path);
            if (allowed.Count == 0)
            {
                if (Ledger.Web.ConsolePaths.IsConsole(context))
                {
                    await Answer(context, Problem.Of(ProblemCodes.NotFound, $"There is no page at {context.Request.Path}."), heading: "Not found");
                }
                else
                {
                    await Answer(context, NoSuchEndpoint(context));
                }
                return;
            }
            await Answer(context, Problem.Of(ProblemCodes.MethodNotAllowed,
                detail: $"{context.Request.Method} is not allowed on {context.Request.Path}; use {string.Join(" or ", allowed)}.")
                with { Allowed = allowed });
        }).ExcludeFromDescription();

    private static Problem NoSuchEndpoint(HttpContext context) =>
        Problem.Of(ProblemCodes.NotFound, detail: $"{context.Request.Method} {context.Request.Path} is not part of the API; see /openapi/v1.json.");

    private static List<string> AllowedMethods(EndpointDataSource source, PathString path)
    {
        var methods = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var endpoint in source.Endpoints.OfType<RouteEndpoint>())
        {
            if (endpoint.Order == int.MaxValue) continue; // the fallback itself
            var template = TemplateParser.Parse(endpoint.RoutePattern.RawText ?? "");
            if (template.Parameters.Any(p => p.IsCatchAll)) continue;
            var matcher = new TemplateMatcher(template, new RouteValueDictionary());
            if (!matcher.TryMatch(path, new RouteValueDictionary())) continue;
            var verbs = endpoint.Metadata.GetMetadata<HttpMethodMetadata>()?.HttpMethods;
            foreach (var verb in verbs ?? ["GET"]) methods.Add(verb);
        }
        return methods.ToList();
    }
}

/// <summary>
/// The database failed during a commit: the transaction may or may not have been committed
/// (a connection dropped during COMMIT leaves no way to tell). The answer must say so.
/// </summary>
public sealed class CommitOutcomeUnknownException(Exception inner)
    : Exception("The database failed during the commit; the outcome is unknown.", inner);

public static class Commits
{
    /// <summary>SaveChanges, with a transient failure during it marked as of unknown outcome.</summary>
    public static async Task SaveAsync(this Marten.IDocumentSession session, CancellationToken ct)
    {
        try
        {
            await session.SaveChangesAsync(ct);
        }
        catch (Exception e) when (DatabaseFailures.IsTransient(e) && !DatabaseFailures.IsConcurrency(e))
        {
            throw new CommitOutcomeUnknownException(e);
        }
    }
}
