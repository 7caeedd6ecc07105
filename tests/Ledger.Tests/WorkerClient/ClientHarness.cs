using System.Collections.Concurrent;
using System.Net;
using System.Text;
using System.Text.Json;
using Alba;
using Ledger.Client;
using Ledger.Tests.Fixtures;
using Microsoft.Extensions.DependencyInjection;

namespace Ledger.Tests.WorkerClient;

/// <summary>One request as it left the client for the ledger (one per attempt: the tap sits inside the retry pipeline).</summary>
public sealed record Sent(DateTimeOffset At, string Method, string Path, string Body)
{
    public string? EventType => Field("type");
    public string? EventId => Field("eventId");

    public string? Field(string name)
    {
        if (Body.Length == 0 || Body[0] != '{') return null;
        using var json = JsonDocument.Parse(Body);
        return json.RootElement.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;
    }
}

/// <summary>
/// A handler between the client's resilience pipeline and the ledger: it records every attempt
/// and lets a test answer, delay, hold or break one instead of (or after) forwarding it.
/// </summary>
public sealed class WireTap : DelegatingHandler
{
    public delegate Task<HttpResponseMessage> Interceptor(Sent sent, Func<Task<HttpResponseMessage>> forward, CancellationToken ct);

    public ConcurrentQueue<Sent> Requests { get; } = new();
    /// <summary>What the ledger (or the interceptor) answered each attempt that got an answer.</summary>
    public ConcurrentQueue<(Sent Request, int Status)> Answers { get; } = new();
    public volatile Interceptor? Intercept;

    public IReadOnlyList<Sent> Events(string type) => Requests.Where(r => r.EventType == type).ToList();

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
    {
        var body = request.Content is null ? "" : await request.Content.ReadAsStringAsync(ct);
        var sent = new Sent(DateTimeOffset.UtcNow, request.Method.Method, request.RequestUri!.AbsolutePath, body);
        Requests.Enqueue(sent);
        var response = Intercept is { } intercept
            ? await intercept(sent, () => base.SendAsync(request, ct), ct)
            : await base.SendAsync(request, ct);
        Answers.Enqueue((sent, (int)response.StatusCode));
        return response;
    }

    /// <summary>A 503 as the ledger sends it, with Retry-After.</summary>
    public static HttpResponseMessage Unavailable(int retryAfterSeconds = 0)
    {
        var response = new HttpResponseMessage(HttpStatusCode.ServiceUnavailable)
        {
            Content = new StringContent(
                """{"type":"urn:run-ledger:problem:database-unavailable","title":"injected","status":503,"code":"database-unavailable","retryable":true}""",
                Encoding.UTF8, "application/problem+json"),
        };
        response.Headers.Add("Retry-After", retryAfterSeconds.ToString());
        return response;
    }
}

/// <summary>A <see cref="LedgerClient"/> wired as an application would wire it, on the in-process ledger.</summary>
public sealed class ClientHarness : IAsyncDisposable
{
    private readonly ServiceProvider _provider;

    public ClientHarness(IAlbaHost host, string key = LedgerHost.AdminKey, TimeSpan? heartbeat = null,
        Action<LedgerResilienceOptions>? resilience = null)
    {
        var services = new ServiceCollection();
        services.AddLedgerClient(o =>
            {
                o.BaseAddress = host.Server.BaseAddress;
                o.Key = key;
                o.Worker = "client-test-worker";
                o.HeartbeatInterval = heartbeat;
                // Short delays so that tests do not wait on backoff; Retry-After still wins when sent.
                o.Resilience.RetryDelay = TimeSpan.FromMilliseconds(20);
                o.Resilience.MaxRetryDelay = TimeSpan.FromMilliseconds(200);
                resilience?.Invoke(o.Resilience);
            })
            .ConfigurePrimaryHttpMessageHandler(() => host.Server.CreateHandler())
            .AddHttpMessageHandler(() => Tap);
        _provider = services.BuildServiceProvider();
        Client = _provider.GetRequiredService<LedgerClient>();
    }

    public WireTap Tap { get; } = new();
    public LedgerClient Client { get; }

    public ValueTask DisposeAsync() => _provider.DisposeAsync();
}
