using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Ledger.Tests.Webhooks;

/// <summary>One request the receiver got: the raw body, its headers, and whether the signature checked out.</summary>
public sealed record Received(string DeliveryId, string Signature, string Body, bool SignatureValid, int AnsweredWith)
{
    public JsonNode Json => JsonNode.Parse(Body)!;
}

/// <summary>
/// A real HTTP subscriber (Kestrel on 127.0.0.1, port 0), as a user's would be: it checks
/// X-Ledger-Signature over the raw body with the secret, records every request, and answers
/// with what <see cref="Answer"/> says (a status, or never when it returns null).
/// </summary>
public sealed class WebhookReceiver : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ConcurrentQueue<Received> _received = new();
    private readonly SemaphoreSlim _arrived = new(0);
    private readonly CancellationTokenSource _stopping = new();

    public string Secret { get; }
    public string Url { get; private set; } = "";
    /// <summary>Given the number of requests so far (0 for the first), the status to answer, or null to never answer.</summary>
    public Func<int, int?> Answer { get; set; } = _ => 200;

    private WebhookReceiver(WebApplication app, string secret)
    {
        _app = app;
        Secret = secret;
    }

    public static async Task<WebhookReceiver> Start(string secret = "receiver-secret-0123456789")
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(k => k.Listen(System.Net.IPAddress.Loopback, 0));
        var app = builder.Build();
        var receiver = new WebhookReceiver(app, secret);
        app.MapPost("/hooks/{name}", receiver.Receive);
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        receiver.Url = address.TrimEnd('/') + "/hooks/" + Guid.NewGuid().ToString("N");
        return receiver;
    }

    private async Task Receive(HttpContext context)
    {
        using var body = new MemoryStream();
        await context.Request.Body.CopyToAsync(body);
        var raw = body.ToArray();
        var signature = context.Request.Headers["X-Ledger-Signature"].ToString();
        var expected = "sha256=" + Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(Secret), raw));
        var valid = CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(signature), Encoding.ASCII.GetBytes(expected));
        var answer = Answer(_received.Count);
        _received.Enqueue(new Received(context.Request.Headers["X-Ledger-Delivery"].ToString(), signature, Encoding.UTF8.GetString(raw), valid, answer ?? 0));
        _arrived.Release();
        if (answer is null)
        {
            // Never answers (until the test is over).
            await Task.Delay(Timeout.Infinite, _stopping.Token).ContinueWith(_ => { });
            context.Response.StatusCode = 504;
            return;
        }
        context.Response.StatusCode = answer.Value;
    }

    public IReadOnlyList<Received> All => _received.ToArray();

    /// <summary>Waits until the received requests satisfy the condition; fails with what was received otherwise.</summary>
    public async Task<IReadOnlyList<Received>> WaitFor(Func<IReadOnlyList<Received>, bool> condition, TimeSpan limit, string what)
    {
        var deadline = DateTime.UtcNow + limit;
        while (!condition(All))
        {
            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero || !await _arrived.WaitAsync(left))
            {
                if (condition(All)) break;
                Assert.Fail($"within {limit.TotalSeconds:0}s: {what}; received {All.Count}:\n{string.Join("\n", All.Select(r => r.Body))}");
            }
        }
        return All;
    }

    public async ValueTask DisposeAsync()
    {
        _stopping.Cancel();
        using (var stop = new CancellationTokenSource(TimeSpan.FromSeconds(5))) await _app.StopAsync(stop.Token);
        await _app.DisposeAsync();
    }
}
