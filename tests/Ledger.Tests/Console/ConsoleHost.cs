using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using JasperFx.CommandLine;
using Ledger.Runs;
using Ledger.Tests.Fixtures;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Time.Testing;
using Microsoft.Playwright;
using Npgsql;

namespace Ledger.Tests.Console;

/// <summary>
/// The ledger on a real Kestrel port (a browser cannot reach a TestServer), with a database and a
/// clock of its own like <see cref="LedgerHost"/>, and Debian's chromium driven by Playwright.
/// </summary>
public sealed class ConsoleHost : IAsyncLifetime
{
    private string? _database;
    private string? _server;
    private WebApplicationFactory<Program>? _factory;

    public FakeTimeProvider Clock { get; } = new(DateTimeOffset.UtcNow) { AutoAdvanceAmount = TimeSpan.FromMilliseconds(1) };
    public string BaseUrl { get; private set; } = "";
    public string ConnectionString { get; private set; } = "";
    public HttpClient Api { get; private set; } = null!;
    public IPlaywright Playwright { get; private set; } = null!;
    public IBrowser Browser { get; private set; } = null!;
    public IServiceProvider Services => _factory!.Services;

    /// <summary>Where the tests leave their screenshots (gitignored).</summary>
    public static string ScreenshotDirectory => Path.Combine(RepositoryRoot(), "tests", "Ledger.Tests", "screenshots");

    public async Task InitializeAsync()
    {
        (_server, ConnectionString, _database) = TestDatabase.Create();
        JasperFxEnvironment.AutoStartHost = true;
        _factory = new WebApplicationFactory<Program>().WithWebHostBuilder(web =>
        {
            web.UseSetting("ConnectionStrings:Ledger", ConnectionString);
            web.UseSetting("Ledger:AdminKey", LedgerHost.AdminKey);
            web.UseSetting("Ledger:WorkerKeys:0", LedgerHost.WorkerKey);
            web.UseSetting("Ledger:ReadKeys:0", LedgerHost.ReadKey);
            web.UseSetting("Ledger:Janitor:Enabled", "false");
            web.UseSetting("Ledger:Janitor:GraceSeconds", "10");
            web.UseSetting("Ledger:DaemonMode", "Leader");
            web.UseSetting("Ledger:Console:SignInAttemptsPerMinute", "1000");
            web.ConfigureServices(services =>
            {
                services.RemoveAll<TimeProvider>();
                services.AddSingleton<TimeProvider>(Clock);
            });
        });
        // Port 0: the system picks a free port, so classes and parallel runs never collide.
        _factory.UseKestrel(kestrel => kestrel.Listen(System.Net.IPAddress.Loopback, 0));
        _factory.StartServer();
        var addresses = _factory.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>()
            .Features.Get<Microsoft.AspNetCore.Hosting.Server.Features.IServerAddressesFeature>()!.Addresses;
        BaseUrl = addresses.First().TrimEnd('/');
        Api = new HttpClient { BaseAddress = new Uri(BaseUrl) };

        Playwright = await Microsoft.Playwright.Playwright.CreateAsync();
        Browser = await Playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions { ExecutablePath = Chromium(), Headless = true });
    }

    /// <summary>Debian's chromium (never a downloaded browser): CHROMIUM_PATH, else chromium on PATH.</summary>
    public static string Chromium()
    {
        var configured = Environment.GetEnvironmentVariable("CHROMIUM_PATH");
        if (!string.IsNullOrWhiteSpace(configured)) return configured;
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':'))
        {
            var candidate = Path.Combine(dir, "chromium");
            if (File.Exists(candidate)) return candidate;
        }
        throw new InvalidOperationException("chromium is not installed: apt-get install -y chromium (./test.sh does it).");
    }

    private static string RepositoryRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Ledger.sln"))) dir = dir.Parent;
        return dir?.FullName ?? AppContext.BaseDirectory;
    }

    public Task<Janitor.SweepResult> Sweep() => Services.GetRequiredService<Janitor>().SweepAsync(CancellationToken.None);

    /// <summary>A browser page with its own cookies, signed in with <paramref name="key"/> when given.</summary>
    public async Task<IPage> Page(string? key = null, int width = 1280, int height = 900)
    {
        var context = await Browser.NewContextAsync(new BrowserNewContextOptions
        {
            BaseURL = BaseUrl, ViewportSize = new ViewportSize { Width = width, Height = height },
        });
        var page = await context.NewPageAsync();
        if (key is not null)
        {
            await page.GotoAsync("/");
            await page.GetByLabel("Key").FillAsync(key);
            await page.GetByRole(AriaRole.Button, new() { Name = "Sign in" }).ClickAsync();
            await Assertions.Expect(page.Locator(".who")).ToBeVisibleAsync();
        }
        return page;
    }

    public static async Task Screenshot(IPage page, string name)
    {
        Directory.CreateDirectory(ScreenshotDirectory);
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = Path.Combine(ScreenshotDirectory, name + ".png"), FullPage = true });
    }

    /// <summary>
    /// The README's picture of the console (docs/console.png), taken from a real page: written only
    /// when <c>LEDGER_UPDATE_SCREENSHOTS=1</c>, as the API description is with LEDGER_UPDATE_OPENAPI.
    /// </summary>
    public static async Task ReadmeScreenshot(IPage page)
    {
        if (Environment.GetEnvironmentVariable("LEDGER_UPDATE_SCREENSHOTS") != "1") return;
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = Path.Combine(RepositoryRoot(), "docs", "console.png"), FullPage = true });
    }

    // ---- data made through the API ----

    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public async Task<(int Status, JsonNode? Body)> Send(HttpMethod method, string url, string? bearer, object? body = null)
    {
        using var request = new HttpRequestMessage(method, url);
        if (bearer is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", bearer);
        if (body is not null) request.Content = JsonContent.Create(body, options: Json);
        using var response = await Api.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        JsonNode? node = null;
        try { node = text.Length == 0 ? null : JsonNode.Parse(text); } catch (JsonException) { }
        return ((int)response.StatusCode, node);
    }

    public async Task<string> Register(object body)
    {
        var (status, json) = await Send(HttpMethod.Post, "/api/runs", LedgerHost.AdminKey, body);
        Assert.True(status == 201, $"registration answered {status}: {json}");
        return json!["runId"]!.GetValue<string>();
    }

    /// <summary>Defines a board ranked by <c>accuracy</c> (highest first); an existing one is left as it is.</summary>
    public async Task<string> Board(string id)
    {
        var (status, json) = await Send(HttpMethod.Post, "/api/boards", LedgerHost.AdminKey, new { id, primaryScore = "accuracy", direction = "max" });
        Assert.True(status is 201 or 200 or 409, $"board definition answered {status}: {json}");
        return id;
    }

    public async Task<string> Claim(string runId, string worker = "worker-1")
    {
        var (status, json) = await Send(HttpMethod.Post, $"/api/runs/{runId}/claim", LedgerHost.WorkerKey, new { worker });
        Assert.True(status == 200, $"claim answered {status}: {json}");
        return json!["leaseToken"]!.GetValue<string>();
    }

    public Task<(int Status, JsonNode? Body)> Events(string runId, string token, params object[] events) =>
        Send(HttpMethod.Post, $"/api/runs/{runId}/events", token, events);

    public object Event(string type, string? eventId = null, DateTimeOffset? occurredAt = null, object? fields = null)
    {
        var node = JsonSerializer.SerializeToNode(fields ?? new { }, Json)!.AsObject();
        node["type"] = type;
        node["eventId"] = eventId ?? Guid.NewGuid().ToString("N");
        node["occurredAt"] = (occurredAt ?? Clock.GetUtcNow()).ToString("O");
        return node;
    }

    public async Task DisposeAsync()
    {
        if (Browser is not null) await Browser.DisposeAsync();
        Playwright?.Dispose();
        Api?.Dispose();
        if (_factory is not null) await _factory.DisposeAsync();
        if (_database is null) return;
        NpgsqlConnection.ClearPool(new NpgsqlConnection(ConnectionString));
        TestDatabase.Drop(_server!, _database);
    }
}
