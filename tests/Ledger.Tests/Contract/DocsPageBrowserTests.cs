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
        await Assertions.Expect(page.GetByText("Register a run", new() { Exact = false }).First).ToBeVisibleAsync();
        await Assertions.Expect(page.GetByText("Report one worker event or an ordered array of them", new() { Exact = false }).First).ToBeVisibleAsync();
        await ConsoleHost.Screenshot(page, "docs");

        Assert.Contains(requested, u => new Uri(u).AbsolutePath == "/openapi/v1.json");
        Assert.True(outside.IsEmpty, "the page asked other hosts: " + string.Join(", ", outside.Distinct()));
    }
}
