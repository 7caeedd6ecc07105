using System.Text.Json;

namespace Ledger.Infrastructure;

/// <summary>
/// The last line of the error contract: whatever escapes an endpoint still leaves as problem
/// details. Database outages are retryable 503s; only a genuine bug is a 500.
/// </summary>
public static class ErrorHandling
{
    public static IApplicationBuilder UseLedgerErrors(this IApplicationBuilder app) => app.Use(async (context, next) =>
    {
        try
        {
            await next(context);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away; there is nobody to answer.
        }
        catch (Exception e) when (!context.Response.HasStarted)
        {
            var problem = Translate(e, context);
            context.Response.Clear();
            await problem.ToResult().ExecuteAsync(context);
        }
    });

    private static Problem Translate(Exception e, HttpContext context)
    {
        var logger = context.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger("Ledger.Errors");
        switch (e)
        {
            case ProblemException p:
                return p.Problem;
            case BadHttpRequestException { StatusCode: 413 }:
                return Problem.Of(413, ProblemCodes.PayloadTooLarge, "The request body is too large", e.Message);
            case BadHttpRequestException or JsonException:
                return Problem.Of(400, ProblemCodes.MalformedJson, "The request could not be read", e.Message);
            case EmbeddedPostgresUnavailableException:
            case var _ when DatabaseFailures.IsTransient(e):
                logger.LogWarning(e, "Database unavailable while serving {Method} {Path}", context.Request.Method, context.Request.Path);
                return Problem.Of(503, ProblemCodes.DatabaseUnavailable, "The ledger's database is unavailable",
                    "Nothing from this request was recorded; retry after the indicated delay.", retryable: true)
                    with { RetryAfterSeconds = 2 };
            default:
                logger.LogError(e, "Unhandled error serving {Method} {Path}", context.Request.Method, context.Request.Path);
                return Problem.Of(500, ProblemCodes.Internal, "The ledger failed unexpectedly",
                    "This is a defect in the ledger, not in the request; it has been logged.", retryable: true);
        }
    }
}
