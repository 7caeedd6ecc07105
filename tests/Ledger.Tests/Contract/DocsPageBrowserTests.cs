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
        await Assertions.Expect(page.GetByText("Register a run", new() { Exact = false }).First).ToBeVisibleAsync();
        await Assertions.Expect(page.GetByText("Report one worker event or an ordered array of them", new() { Exact = false }).First).ToBeVisibleAsync();
        await ConsoleHost.Screenshot(page, "docs");

        Assert.Contains(requested, u => new Uri(u).AbsolutePath == "/openapi/v1.json");
        Assert.True(outside.IsEmpty, "the page asked other hosts: " + string.Join(", ", outside.Distinct()));
    }

    [Fact]
    public async Task the_docs_page_renders_under_its_content_security_policy_and_refuses_to_be_framed()
    {
        var page = await host.Page();
        var violations = new ConcurrentBag<string>();
        page.Console += (_, message) =>
        {
            if (message.Text.Contains("Content Security Policy", StringComparison.OrdinalIgnoreCase) || message.Text.StartsWith("csp-violation")) violations.Add(message.Text);
        };
        await page.AddInitScriptAsync(
            "document.addEventListener('securitypolicyviolation', e => console.error('csp-violation ' + e.violatedDirective + ' ' + e.blockedURI + ' ' + e.sourceFile + ':' + e.lineNumber))");

        var response = await page.GotoAsync("/docs", new() { WaitUntil = WaitUntilState.NetworkIdle });
        Assert.Equal(200, response!.Status);
        var headers = await response.AllHeadersAsync();
        var csp = headers["content-security-policy"];
        Assert.Contains("default-src 'none'", csp);
        Assert.Matches(@"script-src 'self' 'sha256-[A-Za-z0-9+/]{43}='", csp);
        Assert.DoesNotContain("unsafe-eval", csp);
        Assert.DoesNotMatch("script-src[^;]*unsafe-inline", csp);
        Assert.Contains("frame-ancestors 'none'", csp);
        Assert.Equal("DENY", headers["x-frame-options"]);
        Assert.Equal("nosniff", headers["x-content-type-options"]);

        // It still renders, operations open, and nothing was blocked on the way.
        await Assertions.Expect(page.GetByText("Register a run", new() { Exact = false }).First).ToBeVisibleAsync();
        await page.GetByText("Register a run", new() { Exact = false }).First.ClickAsync();
        await page.WaitForLoadStateAsync(LoadState.NetworkIdle);
        await Assertions.Expect(page.GetByText("Report one worker event or an ordered array of them", new() { Exact = false }).First).ToBeVisibleAsync();
        // Only the probe of Scalar's bundled Zod, which tries Function('') once and, refused, works without it (its "jitless" mode).
        var blocked = violations.Where(v => !(v.StartsWith("csp-violation script-src eval ") || v.Contains("'unsafe-eval'"))).Distinct().ToList();
        Assert.True(blocked.Count == 0, "blocked by the policy: " + string.Join(" | ", blocked));

        // Another page cannot frame it.
        var framer = await host.Page();
        await framer.SetContentAsync($"<iframe id=docs src=\"{host.BaseUrl}/docs/\" width=800 height=600></iframe>");
        var frame = await (await framer.WaitForSelectorAsync("#docs"))!.ContentFrameAsync();
        await frame!.WaitForLoadStateAsync(LoadState.Load);
        Assert.StartsWith("chrome-error:", frame.Url);
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
        await Assertions.Expect(page.GetByText("Register a run", new() { Exact = false }).First).ToBeVisibleAsync();
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
