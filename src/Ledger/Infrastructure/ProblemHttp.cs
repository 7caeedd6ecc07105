using System.Text.Json;
using Ledger.Contract;

namespace Ledger.Infrastructure;

/// <summary>
/// How a <see cref="Problem"/> travels over HTTP: the edge's part of the error contract, kept out of
/// the catalogue (<see cref="ProblemCatalogue"/>), which knows nothing of HTTP.
/// </summary>
public static class ProblemHttp
{
    public static IResult ToResult(this Problem problem) => new ProblemResult(problem);

    /// <summary>
    /// The parts of the answer outside the body: the status, Retry-After for a retryable refusal,
    /// Allow for a 405, and the refusal remembered for what observes answers (unauthenticated counts).
    /// Every writer of a refusal (problem details, the health answer, the console's HTML) calls this.
    /// </summary>
    public static void ApplyTo(this Problem problem, HttpContext context)
    {
        var response = context.Response;
        response.StatusCode = problem.Status;
        if (problem.RetryAfterSeconds is { } seconds)
        {
            response.Headers.RetryAfter = seconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        if (problem.Status == 405 && problem.Allowed is { Count: > 0 } methods) response.Headers.Allow = string.Join(", ", methods);
        context.Items[typeof(Problem)] = problem;
    }
}

internal sealed class ProblemResult(Problem problem) : IResult, IStatusCodeHttpResult
{
    public int? StatusCode => problem.Status;

    public async Task ExecuteAsync(HttpContext httpContext)
    {
        var response = httpContext.Response;
        problem.ApplyTo(httpContext);
        response.ContentType = "application/problem+json";
        var withInstance = problem.Instance is null ? problem with { Instance = httpContext.Request.Path } : problem;
        await JsonSerializer.SerializeAsync(response.Body, withInstance, LedgerJson.Options, httpContext.RequestAborted);
    }
}

/// <summary>A refusal decided deep in a use case; endpoints turn it into a response.</summary>
public sealed class ProblemException(Problem problem) : Exception(problem.Detail ?? problem.Title)
{
    public Problem Problem { get; } = problem;
}
