using System.Collections.Concurrent;
using Ledger.Tests.Console;
using Microsoft.Playwright;

namespace Ledger.Tests.Contract;

/// <summary>
/// GET /docs in a real browser: it renders the ledger's own description, and every request the
/// page makes goes to the ledger itself. Requests to any other host are recorded and aborted,
/// so a page that needed one would also visibly fail to render.
/// </summary>
public sealed class DocsPageBrowserTests(ConsoleHost host) : IClassFixture<ConsoleHost>
{
    [Fact]
    public async Task the_docs_page_renders_the_description_and_asks_no_outside_host()
    {
        var page = await host.Page();
        var ledger = new Uri(host.BaseUrl);
        var requested = new ConcurrentBag<string>();
        var outside = new ConcurrentBag<string>();
        await page.Context.RouteAsync("**/*", async route =>
        {
            var url = route.Request.Url;
            requested.Add(url);
            if (Uri.TryCreate(url, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https"
                && (uri.Host != ledger.Host || uri.Port != ledger.Port))
            {
                outside.Add(url);
                await route.AbortAsync();
                return;
            }
            await route.ContinueAsync();
        });

        var response = await page.GotoAsync("/docs", new() { WaitUntil = WaitUntilState.NetworkIdle });
        Assert.Equal(200, response!.Status);
        // Scalar renders the description in the browser: on a loaded machine that takes more than Playwright's default 5 s.
        await Assertions.Expect(page.GetByText("Register a run", new() { Exact = false }).First).ToBeVisibleAsync(new() { Timeout = 30_000 });
        await Assertions.Expect(page.GetByText("Report one worker event or an ordered array of them", new() { Exact = false }).First).ToBeVisibleAsync();
        await ConsoleHost.Screenshot(page, "docs");

        Assert.Contains(requested, u => new Uri(u).AbsolutePath == "/openapi/v1.json");
        Assert.True(outside.IsEmpty, "the page asked other hosts: " + string.Join(", ", outside.Distinct()));
    }

    /// <summary>
    /// Scalar offers an AI agent, MCP, a developer toolbar (share, deploy, SDK generation) and
    /// .NET hints, some only on localhost: each needs Scalar's services or means nothing for a
    /// self-hosted ledger. Read at http://localhost, as a developer opens it, once the page has rendered.
    /// (The "Powered by Scalar" link stays: it asks nothing of anyone until it is followed.)
    /// </summary>
    [Fact]
    public async Task the_docs_page_offers_nothing_that_needs_scalars_services()
    {
        var page = await host.Page(width: 1280, height: 900);
        var local = new UriBuilder(host.BaseUrl) { Host = "localhost" }.Uri;
        var response = await page.GotoAsync(new Uri(local, "/docs").ToString(), new() { WaitUntil = WaitUntilState.NetworkIdle });
        Assert.Equal(200, response!.Status);
        // Scalar renders the description in the browser: on a loaded machine that takes more than Playwright's default 5 s.
        await Assertions.Expect(page.GetByText("Register a run", new() { Exact = false }).First).ToBeVisibleAsync(new() { Timeout = 30_000 });
        // Whatever appears late (a toolbar, a floating button) has had its time.
        await page.WaitForTimeoutAsync(1500);
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = Path.Combine(ConsoleHost.ScreenshotDirectory, "docs-localhost.png") });

        var offered = new List<string>();
        foreach (var text in new[] { "Ask AI", "Deploy", "Generate SDK", "Share", "MCP", "Agent", "Open in", "API Client" })
        {
            var shown = page.GetByText(text, new() { Exact = false });
            for (var i = 0; i < await shown.CountAsync(); i++)
            {
                if (await shown.Nth(i).IsVisibleAsync()) offered.Add($"{text}: {(await shown.Nth(i).InnerTextAsync()).Trim()}");
            }
            var named = page.GetByRole(AriaRole.Button, new() { NameRegex = new System.Text.RegularExpressions.Regex(System.Text.RegularExpressions.Regex.Escape(text), System.Text.RegularExpressions.RegexOptions.IgnoreCase) });
            for (var i = 0; i < await named.CountAsync(); i++)
            {
                if (await named.Nth(i).IsVisibleAsync()) offered.Add($"button {text}");
            }
        }
        Assert.True(offered.Count == 0, "the page offers: " + string.Join("; ", offered.Distinct()));
        // Nor does any link lead to Scalar's hosted client.
        Assert.Equal(0, await page.Locator("a[href*='client.scalar.com']").CountAsync());
    }
}
