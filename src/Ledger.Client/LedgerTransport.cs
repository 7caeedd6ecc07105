using System.Net.Http.Headers;
using System.Text.Json;
using Polly.CircuitBreaker;
using Polly.Timeout;

namespace Ledger.Client;

/// <summary>
/// Sends one request through the named HttpClient (whose pipeline retries) and turns the final
/// answer into a value or a refusal. The body is serialized once, so that every attempt sends
/// the same bytes with the same eventId, runId or claimId.
/// </summary>
internal sealed class LedgerTransport(IHttpClientFactory factory)
{
    private static readonly MediaTypeHeaderValue Json = new("application/json") { CharSet = "utf-8" };

    public async Task<T> SendAsync<T>(HttpMethod method, string path, string bearer, object? body, CancellationToken ct) =>
        (await SendWithDateAsync<T>(method, path, bearer, body, ct)).Value;

    /// <summary>The answer and the ledger's clock when it answered (the Date header), when it says.</summary>
    public async Task<(T Value, DateTimeOffset? Date)> SendWithDateAsync<T>(HttpMethod method, string path, string bearer, object? body,
        CancellationToken ct)
    {
        var (status, problem, bytes, date) = await SendRawAsync(method, path, bearer, body, ct);
        if (problem is not null) throw ToException(problem);
        var value = JsonSerializer.Deserialize<T>(bytes, WireJson.Options)
                    ?? throw new LedgerUnavailableException($"The ledger answered {status} to {method} {path} with an empty body.");
        return (value, date);
    }

    /// <summary>The answer, or the problem it carries (a problem is never thrown here).</summary>
    public async Task<(int Status, LedgerProblem? Problem, byte[] Body, DateTimeOffset? Date)> SendRawAsync(HttpMethod method, string path, string bearer,
        object? body, CancellationToken ct)
    {
        using var request = new HttpRequestMessage(method, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", bearer);
        request.Headers.Accept.ParseAdd("application/json");
        request.Headers.Accept.ParseAdd("application/problem+json");
        if (body is not null)
        {
            request.Content = new ByteArrayContent(JsonSerializer.SerializeToUtf8Bytes(body, body.GetType(), WireJson.Options));
            request.Content.Headers.ContentType = Json;
        }

        var http = factory.CreateClient(LedgerClient.HttpClientName);
        HttpResponseMessage response;
        try
        {
            response = await http.SendAsync(request, HttpCompletionOption.ResponseContentRead, ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            throw;
        }
        catch (Exception e) when (e is HttpRequestException or TimeoutRejectedException or BrokenCircuitException or OperationCanceledException)
        {
            throw new LedgerUnavailableException($"The ledger could not be reached for {method} {path} through every retry: {e.Message}", inner: e);
        }

        using (response)
        {
            var bytes = await response.Content.ReadAsByteArrayAsync(ct);
            var status = (int)response.StatusCode;
            var date = response.Headers.Date;
            if (response.IsSuccessStatusCode) return (status, null, bytes, date);
            return (status, ReadProblem(status, response.Content.Headers.ContentType?.MediaType, bytes), bytes, date);
        }
    }

    private static LedgerProblem ReadProblem(int status, string? mediaType, byte[] bytes)
    {
        if (mediaType is not null && mediaType.Contains("json", StringComparison.OrdinalIgnoreCase) && bytes.Length > 0)
        {
            try
            {
                var problem = JsonSerializer.Deserialize<LedgerProblem>(bytes, WireJson.Options);
                if (problem is not null) return problem.Status == 0 ? problem with { Status = status } : problem;
            }
            catch (JsonException)
            {
                // Not the ledger's problem details (a proxy, say): described from the status alone below.
            }
        }
        return new LedgerProblem
        {
            Status = status,
            Title = $"HTTP {status}",
            Detail = bytes.Length == 0 ? null : System.Text.Encoding.UTF8.GetString(bytes, 0, Math.Min(bytes.Length, 500)),
            Retryable = status is 408 or 429 or >= 500,
        };
    }

    /// <summary>A refusal the caller cannot fix by retrying, or the last retryable answer after every retry.</summary>
    public static LedgerException ToException(LedgerProblem problem) => problem.Retryable
        ? new LedgerUnavailableException(
            $"The ledger kept answering {problem.Code ?? problem.Status.ToString()} ({problem.Status}) through every retry{(problem.Detail is null ? "" : ": " + problem.Detail)}",
            problem)
        : new LedgerRefusedException(problem);
}
