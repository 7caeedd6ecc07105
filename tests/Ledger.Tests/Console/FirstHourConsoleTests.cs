using System.Text.RegularExpressions;
using Ledger.Tests.Fixtures;
using Marten;
using Marten.Events;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Playwright;

namespace Ledger.Tests.Console;

/// <summary>The width of a laptop screen and of a phone: the console is checked at both.</summary>
public static class Widths
{
    public const int Laptop = 1280;
    public const int Phone = 390;

    public static readonly TheoryData<int> Both = new() { Laptop, Phone };

    /// <summary>How many pixels the page is wider than the window (0: no horizontal scroll).</summary>
    public static Task<int> Overflow(IPage page) =>
        page.EvaluateAsync<int>("() => document.documentElement.scrollWidth - window.innerWidth");
}

/// <summary>A ledger with nothing in it yet, as a newcomer first sees it: every page says what to do next.</summary>
public sealed class EmptyLedgerConsoleTests(ConsoleHost host) : IClassFixture<ConsoleHost>
{
    [Theory]
    [MemberData(nameof(Widths.Both), MemberType = typeof(Widths))]
    public async Task an_empty_ledger_says_how_to_start_on_every_page_instead_of_an_empty_table(int width)
    {
        var page = await host.Page(LedgerHost.ReadKey, width: width, height: 900);

        await page.GotoAsync("/runs");
        var empty = page.GetByRole(AriaRole.Status);
        await Assertions.Expect(empty).ToContainTextAsync("no runs yet");
        await Assertions.Expect(empty).ToContainTextAsync("POST /api/runs");
        await Assertions.Expect(empty.GetByRole(AriaRole.Link, new() { Name = "/docs" })).ToBeVisibleAsync();
        Assert.Equal(0, await page.Locator("main table").CountAsync());
        Assert.True(await Widths.Overflow(page) <= 1, $"/runs overflows at {width} px");
        await ConsoleHost.Screenshot(page, $"empty-runs-{width}");

        // Filters that match nothing say so, and how to see everything again.
        await page.GotoAsync("/runs?status=lost");
        await Assertions.Expect(page.GetByRole(AriaRole.Status)).ToContainTextAsync("No run matches these filters");

        foreach (var (path, says) in new[]
                 {
                     ("/boards", "POST /api/boards"), ("/batches", "POST /api/batches"),
                     ("/anomalies", "No anomaly yet"), ("/kpis", "Nothing happened in the last"),
                     ("/rejections", "No refused request"),
                 })
        {
            await page.GotoAsync(path);
            await Assertions.Expect(page.Locator("main .empty").First).ToContainTextAsync(says);
            // No table of headers alone (the KPI page's numbers, folded away, are zeros by hour).
            Assert.Equal(0, await page.EvaluateAsync<int>("() => [...document.querySelectorAll('main table')].filter(t => !t.closest('details')).filter(t => t.querySelectorAll('tbody tr').length === 0).length"));
            Assert.True(await Widths.Overflow(page) <= 1, $"{path} overflows at {width} px");
        }
    }
}

/// <summary>A board and a batch just defined, before any run: their pages say what comes next, with no table of headers alone.</summary>
public sealed class FreshBoardAndBatchConsoleTests(ConsoleHost host) : IClassFixture<ConsoleHost>
{
    private const string NoHeaderOnlyTable =
        "() => [...document.querySelectorAll('main table')].filter(t => t.querySelectorAll('tbody tr').length === 0).length";

    [Fact]
    public async Task a_board_and_a_batch_without_runs_say_how_runs_join_them()
    {
        var tag = Guid.NewGuid().ToString("N")[..8];
        var board = await host.Board($"fresh-board-{tag}");
        var batch = $"fresh-batch-{tag}";
        var (status, json) = await host.Send(HttpMethod.Post, "/api/batches", LedgerHost.AdminKey, new { id = batch, runIds = new[] { $"expected-{tag}" } });
        Assert.True(status == 201, $"batch answered {status}: {json}");
        var page = await host.Page(LedgerHost.ReadKey, width: Widths.Laptop, height: 900);

        foreach (var (path, says) in new[] { ($"/boards/{board}", $"\"board\": \"{board}\""), ($"/batches/{batch}", $"\"batch\": \"{batch}\"") })
        {
            await page.GotoAsync(path);
            await Assertions.Expect(page.Locator("main .empty").First).ToContainTextAsync(says);
            Assert.Equal(0, await page.EvaluateAsync<int>(NoHeaderOnlyTable));
        }
    }
}

/// <summary>The console's pages with what a first hour produces: the runs table, the index pages, verdicts, anomalies and KPIs.</summary>
public sealed class FirstHourConsoleTests(ConsoleHost host) : IClassFixture<ConsoleHost>
{
    private static string NewRunId(string prefix) => $"{prefix}-{Guid.NewGuid():N}"[..(prefix.Length + 13)];

    /// <summary>Runs as the README's walk-through, the Python client (run-&lt;32 hex digits&gt;) and a fan-out make them: long ids, a board, a batch, labels, anomalies.</summary>
    private async Task<string> Workload(string tag)
    {
        var board = await host.Board($"demo-board-{tag}");
        var batch = $"job-{tag}";
        var (status, json) = await host.Send(HttpMethod.Post, "/api/batches", LedgerHost.AdminKey,
            new { id = batch, title = "Evaluation fan-out", matrix = new { labels = new { model = new[] { "mistral-7b-instruct-v0.2", "llama3.2-1b-instruct" }, region = new[] { "US", "eu-west" } } } });
        Assert.True(status == 201, $"batch answered {status}: {json}");
        var ids = new[] { $"demo-run-{DateTimeOffset.UtcNow.ToUnixTimeSeconds()}-{Random.Shared.Next(10000, 99999)}", $"run-{Guid.NewGuid():N}", $"run-{Guid.NewGuid():N}" };
        foreach (var (id, (model, region)) in ids.Zip(new[] { ("mistral-7b-instruct-v0.2", "US"), ("llama3.2-1b-instruct", "eu-west"), ("mistral-7b-instruct-v0.2", "eu-west") }))
        {
            var runId = await host.Register(new
            {
                runId = id, board, participant = $"team-{model}", batch, labels = new { model, region, dataset = "squad-v2-validation" },
                requiredScores = new[] { "accuracy" }, leaseSeconds = 600,
            });
            var token = await host.Claim(runId, worker: "host-17.eval.example.internal");
            // Completed before its results: running, with an anomaly; then the score arrives.
            Assert.Equal(200, (await host.Events(runId, token, host.Event("run.started"), host.Event("run.completed"))).Status);
            if (region == "US") Assert.Equal(200, (await host.Events(runId, token, host.Event("scores.reported", fields: new { scores = new { accuracy = 0.93 } }))).Status);
        }
        return board;
    }

    [Theory]
    [MemberData(nameof(Widths.Both), MemberType = typeof(Widths))]
    public async Task the_runs_table_needs_no_horizontal_scroll(int width)
    {
        var tag = Guid.NewGuid().ToString("N")[..6];
        await Workload(tag);
        var page = await host.Page(LedgerHost.ReadKey, width: width, height: 900);
        await page.GotoAsync($"/runs?batch=job-{tag}");
        await Assertions.Expect(page.Locator(".count")).ToContainTextAsync("3 runs");

        // Nothing is behind a scroll: not the page, not the table's own box, and the last column is inside the window.
        Assert.True(await Widths.Overflow(page) <= 1, $"the page overflows at {width} px");
        var table = page.Locator("div.table").First;
        var hidden = await table.EvaluateAsync<int>("t => t.scrollWidth - t.clientWidth");
        Assert.True(hidden <= 1, $"the runs table hides {hidden} px behind a horizontal scroll at {width} px");
        var heartbeat = page.Locator("table.runs td[data-label='Last heartbeat']").First;
        await Assertions.Expect(heartbeat).ToBeVisibleAsync();
        var box = await heartbeat.BoundingBoxAsync();
        Assert.True(box!.X + box.Width <= width, $"Last heartbeat ends at {box.X + box.Width} px of {width}");
        if (width == Widths.Laptop)
        {
            await Assertions.Expect(page.GetByRole(AriaRole.Columnheader, new() { Name = "Registered" })).ToBeInViewportAsync();
            await Assertions.Expect(page.GetByRole(AriaRole.Columnheader, new() { Name = "Last heartbeat" })).ToBeInViewportAsync();
        }
        else
        {
            // On a phone each run reads as a card of labelled lines.
            await Assertions.Expect(page.Locator("table.runs thead")).ToBeHiddenAsync();
            var registered = page.Locator("table.runs td[data-label=Registered]").First;
            Assert.Equal("Registered", await registered.EvaluateAsync<string>("td => getComputedStyle(td, '::before').content.replaceAll('\"', '')"));
        }
        await ConsoleHost.Screenshot(page, $"runs-{width}");
    }

    [Theory]
    [MemberData(nameof(Widths.Both), MemberType = typeof(Widths))]
    public async Task boards_and_batches_have_index_pages_linked_from_the_header(int width)
    {
        var tag = Guid.NewGuid().ToString("N")[..6];
        var board = await Workload(tag);
        var page = await host.Page(LedgerHost.ReadKey, width: width, height: 900);
        await page.GotoAsync("/runs");

        await page.GetByRole(AriaRole.Navigation, new() { Name = "Console" }).GetByRole(AriaRole.Link, new() { Name = "Boards" }).ClickAsync();
        await Assertions.Expect(page).ToHaveURLAsync(new Regex("/boards$"));
        var row = page.Locator("main tr", new() { HasText = board });
        await Assertions.Expect(row).ToContainTextAsync("accuracy, highest first");
        Assert.True(await Widths.Overflow(page) <= 1, $"/boards overflows at {width} px");
        await ConsoleHost.Screenshot(page, $"boards-{width}");
        await row.GetByRole(AriaRole.Link, new() { Name = board }).ClickAsync();
        await Assertions.Expect(page.GetByRole(AriaRole.Heading, new() { Name = $"Board {board}" })).ToBeVisibleAsync();

        await page.GetByRole(AriaRole.Navigation, new() { Name = "Console" }).GetByRole(AriaRole.Link, new() { Name = "Batches" }).ClickAsync();
        await Assertions.Expect(page).ToHaveURLAsync(new Regex("/batches$"));
        row = page.Locator("main tr", new() { HasText = $"job-{tag}" });
        await Assertions.Expect(row).ToContainTextAsync("Evaluation fan-out");
        await Assertions.Expect(row.Locator("td").Nth(2)).ToHaveTextAsync("4");
        Assert.True(await Widths.Overflow(page) <= 1, $"/batches overflows at {width} px");
        await row.GetByRole(AriaRole.Link, new() { Name = $"job-{tag}" }).ClickAsync();
        await Assertions.Expect(page.GetByRole(AriaRole.Heading, new() { Name = $"Batch job-{tag}" })).ToBeVisibleAsync();
    }

    [Fact]
    public async Task a_verdict_without_a_reason_and_anomaly_details_read_as_a_person_writes_them()
    {
        // A success (no reason), a ghost completion after lost (seed 001), and an observation that disagrees.
        var ok = await host.Register(new { runId = NewRunId("plain-ok"), leaseSeconds = 600 });
        var token = await host.Claim(ok);
        Assert.Equal(200, (await host.Events(ok, token, host.Event("run.started"), host.Event("run.completed"))).Status);

        var ghost = await host.Register(new { runId = NewRunId("ghost"), leaseSeconds = 60 });
        token = await host.Claim(ghost);
        var claimed = host.Clock.GetUtcNow();
        host.Clock.Advance(TimeSpan.FromMinutes(2));
        await host.Sweep();
        Assert.Equal(409, (await host.Events(ghost, token, host.Event("run.completed", "ghost-completion", claimed))).Status);
        var (observed, body) = await host.Send(HttpMethod.Post, $"/api/runs/{ghost}/observations", LedgerHost.AdminKey,
            new { source = "modal", status = "succeeded", observedAt = claimed.ToString("O") });
        Assert.True(observed == 200, $"observation answered {observed}: {body}");

        var page = await host.Page(LedgerHost.ReadKey);
        await page.GotoAsync($"/runs/{ok}");
        var verdicts = page.Locator("main li", new() { HasText = "by ledger" });
        await Assertions.Expect(verdicts.First).ToContainTextAsync("succeeded by ledger");
        Assert.DoesNotContain("()", await verdicts.First.InnerTextAsync());

        await page.GotoAsync($"/runs/{ghost}");
        var state = page.GetByRole(AriaRole.Region, new() { Name = "Current state" });
        await Assertions.Expect(state).ToContainTextAsync("late-completion");
        await Assertions.Expect(state).ToContainTextAsync("status-mismatch");
        var text = await page.Locator("main").InnerTextAsync();
        // ISO 8601 round-trip times are for machines; the page shows the console's own format.
        Assert.DoesNotMatch(new Regex(@"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}"), text);
        Assert.DoesNotContain("+00:00", text);
        Assert.DoesNotContain("arrived 0s", text);
        Assert.Contains($"Completion claimed to occur at {Show(claimed)}", text);
        Assert.Contains("modal observed succeeded at " + Show(claimed), text);
        await ConsoleHost.Screenshot(page, "run-anomaly-details");

        await page.GotoAsync("/anomalies?kind=late-completion");
        Assert.DoesNotContain("+00:00", await page.Locator("main").InnerTextAsync());
    }

    private static string Show(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss.fff'Z'");

    [Theory]
    [MemberData(nameof(Widths.Both), MemberType = typeof(Widths))]
    public async Task the_kpi_charts_are_compact_and_range_over_the_data(int width)
    {
        await Workload(Guid.NewGuid().ToString("N")[..6]);
        await host.Services.GetRequiredService<Marten.IDocumentStore>().WaitForNonStaleProjectionDataAsync(TimeSpan.FromSeconds(30));
        var page = await host.Page(LedgerHost.ReadKey, width: width, height: 900);
        await page.GotoAsync("/kpis");

        // All of today's data is from the last hours: the charts are by hour, from the first hour with data (at least 6 of them).
        await Assertions.Expect(page.Locator(".count")).ToContainTextAsync("6 hours");
        var charts = page.Locator("svg.chart");
        await Assertions.Expect(charts).ToHaveCountAsync(3);
        for (var i = 0; i < 3; i++)
        {
            var box = await charts.Nth(i).BoundingBoxAsync();
            Assert.True(box!.Height <= 160, $"chart {i} is {box.Height} px tall");
            Assert.True(box.X + box.Width <= width, $"chart {i} ends at {box.X + box.Width} px of {width}");
        }
        // The registrations are in the last bucket, and the bars are not hairlines at the edge.
        var bar = page.Locator("svg.chart rect.c-registered").First;
        Assert.True((await bar.BoundingBoxAsync())!.Width >= 15);
        if (width == Widths.Laptop)
        {
            // Side by side: the three charts take one row, not half the page.
            var tops = new List<float>();
            for (var i = 0; i < 3; i++) tops.Add((await charts.Nth(i).BoundingBoxAsync())!.Y);
            Assert.True(tops.Max() - tops.Min() < 40, $"the charts are on rows {string.Join(", ", tops)}");
        }
        Assert.True(await Widths.Overflow(page) <= 1, $"/kpis overflows at {width} px");
        await ConsoleHost.Screenshot(page, $"kpis-{width}");

        // Days on request: then the last 7 at least.
        await page.GetByLabel("Bucket").SelectOptionAsync("day");
        await page.GetByRole(AriaRole.Button, new() { Name = "Show" }).ClickAsync();
        await Assertions.Expect(page.Locator(".count")).ToContainTextAsync("7 days");
    }
}
