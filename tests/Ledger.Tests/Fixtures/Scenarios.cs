using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Alba;

namespace Ledger.Tests.Fixtures;

/// <summary>
/// Small helpers that build state through the real HTTP API: of the class's host, or of
/// another instance on the same database and clock (<see cref="LedgerHost.SecondInstance"/>).
/// </summary>
public sealed class Scenarios(LedgerHost ledger, IAlbaHost? instance = null)
{
    private readonly HttpClient _http = (instance ?? ledger.Host).Server.CreateClient();

    public static string NewRunId(string prefix = "run") => $"{prefix}-{Guid.NewGuid():N}";

    public DateTimeOffset Now => ledger.Clock.GetUtcNow();

    public async Task<string> Register(object? body = null)
    {
        var response = await Send(HttpMethod.Post, "/api/runs", LedgerHost.AdminKey, body ?? new { });
        Assert.True(response.Status == HttpStatusCode.Created, $"registration answered {response.Status}: {response.Text}");
        return response.Json!["runId"]!.GetValue<string>();
    }

    public async Task<string> Claim(string runId, string worker = "worker-1")
    {
        var response = await Send(HttpMethod.Post, $"/api/runs/{runId}/claim", LedgerHost.WorkerKey, new { worker });
        Assert.True(response.Status == HttpStatusCode.OK, $"claim answered {response.Status}: {response.Text}");
        return response.Json!["leaseToken"]!.GetValue<string>();
    }

    /// <summary>Registers and claims a run; returns its id and lease token.</summary>
    public async Task<(string RunId, string Token)> Started(object? registration = null)
    {
        var runId = await Register(registration ?? new { runId = NewRunId() });
        var token = await Claim(runId);
        return (runId, token);
    }

    public Task<Response> Events(string runId, string? token, object body) =>
        Send(HttpMethod.Post, $"/api/runs/{runId}/events", token, body);

    public Task<Response> GetRun(string runId, string key = LedgerHost.AdminKey) =>
        Send(HttpMethod.Get, $"/api/runs/{runId}", key);

    public async Task<JsonNode> Run(string runId)
    {
        var response = await GetRun(runId);
        Assert.True(response.Status == HttpStatusCode.OK, $"GET run answered {response.Status}: {response.Text}");
        return response.Json!;
    }

    public async Task<JsonNode> DefineBatch(object body)
    {
        var response = await Send(HttpMethod.Post, "/api/batches", LedgerHost.AdminKey, body);
        Assert.True(response.Status == HttpStatusCode.Created, $"batch definition answered {response.Status}: {response.Text}");
        return response.Json!;
    }

    public async Task<JsonNode> Batch(string batchId)
    {
        var response = await Send(HttpMethod.Get, $"/api/batches/{batchId}", LedgerHost.ReadKey);
        Assert.True(response.Status == HttpStatusCode.OK, $"GET batch answered {response.Status}: {response.Text}");
        return response.Json!;
    }

    public Task<Response> Observe(string runId, object body, string? key = LedgerHost.WorkerKey) =>
        Send(HttpMethod.Post, $"/api/runs/{runId}/observations", key, body);

    public async Task<Response> Send(HttpMethod method, string url, string? bearer, object? body = null, string? rawBody = null)
    {
        using var request = new HttpRequestMessage(method, url);
        if (bearer is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", bearer);
        if (rawBody is not null) request.Content = new StringContent(rawBody, Encoding.UTF8, "application/json");
        else if (body is not null) request.Content = new StringContent(JsonSerializer.Serialize(body, Json), Encoding.UTF8, "application/json");
        using var response = await _http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        await ContractValidator.Check(_http, method, url, response.StatusCode, response.Content.Headers.ContentType?.MediaType, text);
        return new Response(response.StatusCode, text, response.Content.Headers.ContentType?.MediaType,
            response.Headers.RetryAfter?.Delta);
    }

    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public static object Event(string type, string? eventId = null, DateTimeOffset? occurredAt = null, object? fields = null)
    {
        var node = fields is null ? new JsonObject() : JsonSerializer.SerializeToNode(fields, Json)!.AsObject();
        node["type"] = type;
        node["eventId"] = eventId ?? Guid.NewGuid().ToString("N");
        node["occurredAt"] = (occurredAt ?? DateTimeOffset.UtcNow).ToString("O");
        return node;
    }
}

public sealed record Response(HttpStatusCode Status, string Text, string? ContentType, TimeSpan? RetryAfter)
{
    public JsonNode? Json => Text.Length == 0 ? null : JsonNode.Parse(Text);
    public int Code => (int)Status;
    public string? ProblemCode => Json?["code"]?.GetValue<string>();
    public bool? Retryable => Json?["retryable"]?.GetValue<bool>();
    /// <summary>The fields a refusal names in <c>errors</c>, in its order (empty when there are none).</summary>
    public IReadOnlyList<string> ErrorFields => Json?["errors"] is JsonObject errors ? errors.Select(e => e.Key).ToList() : [];
    /// <summary>The run's status: <c>runStatus</c> of a problem, <c>status</c> of a success.</summary>
    public string? RunStatus => Json?["runStatus"]?.GetValue<string>()
        ?? (Json?["status"] is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : null);
}
