using System.Text.RegularExpressions;
using Ledger.Tests.Fixtures;
using Marten;
using Marten.Events;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Playwright;

namespace Ledger.Tests.Console;

/// <summary>
/// The console in a real browser (Debian's chromium through Playwright) against the ledger on a
/// real port; every run on a page was made through the API.
/// </summary>
public sealed class ConsoleBrowserTests(ConsoleHost host) : IClassFixture<ConsoleHost>
{
    private static string NewRunId(string prefix) => $"{prefix}-{Guid.NewGuid():N}"[..(prefix.Length + 13)];

    [Fact]
    public async Task without_a_session_a_page_shows_the_sign_in_form_and_no_run_data()
    {
        var runId = await host.Register(new { runId = NewRunId("private"), board = await host.Board("hidden-board"), participant = "ana" });
        var page = await host.Page();

        foreach (var path in new[] { "/runs", $"/runs/{runId}", "/anomalies", "/kpis", "/rejections", "/boards/hidden-board", "/batches/any" })
        {
            var response = await page.GotoAsync(path);
            Assert.EndsWith("/", page.Url);
            var html = await page.ContentAsync();
            Assert.DoesNotContain(runId, html);
            Assert.DoesNotContain("hidden-board", html);
            Assert.True(await page.GetByLabel("Key").IsVisibleAsync());
        }
        await ConsoleHost.Screenshot(page, "sign-in");
    }

    [Fact]
    public async Task sign_in_refuses_a_wrong_key_and_a_worker_key_accepts_a_read_key_by_keyboard_and_signs_out()
    {
        var page = await host.Page();
        foreach (var wrong in new[] { "not-a-key-at-all", LedgerHost.WorkerKey })
        {
            await page.GotoAsync("/");
            await page.GetByLabel("Key").FillAsync(wrong);
            await page.GetByRole(AriaRole.Button, new() { Name = "Sign in" }).ClickAsync();
            await Assertions.Expect(page.GetByRole(AriaRole.Alert)).ToContainTextAsync("not a read key or the admin key");
            Assert.DoesNotContain(wrong, await page.ContentAsync());
            Assert.DoesNotContain(wrong, page.Url);
            Assert.Empty(await page.Context.CookiesAsync(new[] { host.BaseUrl }) is var c ? c.Where(x => x.Name == "ledger-session") : []);
        }

        // Keyboard only: the key field has the focus, Enter submits.
        await page.GotoAsync("/");
        await Assertions.Expect(page.GetByLabel("Key")).ToBeFocusedAsync();
        await page.Keyboard.TypeAsync(LedgerHost.ReadKey);
        await page.Keyboard.PressAsync("Enter");
        await Assertions.Expect(page.Locator(".who")).ToBeVisibleAsync();
        Assert.EndsWith("/runs", page.Url);
        Assert.DoesNotContain(LedgerHost.ReadKey, await page.ContentAsync());
        Assert.DoesNotContain(LedgerHost.ReadKey, page.Url);
        var session = (await page.Context.CookiesAsync()).Single(c => c.Name == "ledger-session");
        Assert.True(session.HttpOnly);
        Assert.Equal(SameSiteAttribute.Lax, session.SameSite);
        Assert.DoesNotContain(LedgerHost.ReadKey, session.Value);
        await Assertions.Expect(page.Locator(".who")).ToContainTextAsync("reader");

        await page.GetByRole(AriaRole.Button, new() { Name = "Sign out" }).ClickAsync();
        await Assertions.Expect(page.GetByLabel("Key")).ToBeVisibleAsync();
        Assert.DoesNotContain(await page.Context.CookiesAsync(), c => c.Name == "ledger-session");
        await page.GotoAsync("/runs");
        Assert.True(await page.GetByLabel("Key").IsVisibleAsync());
    }

    [Fact]
    public async Task the_runs_list_filters_by_status_board_batch_label_anomaly_time_and_stuck()
    {
        var tag = Guid.NewGuid().ToString("N")[..6];
        var board = await host.Board($"board-{tag}");
        await host.Board($"other-{tag}");
        var eu = await host.Register(new { runId = NewRunId("eu"), board, participant = "ana", labels = new { region = "EU", tag } });
        var us = await host.Register(new { runId = NewRunId("us"), board, participant = "ben", labels = new { region = "US", tag } });
        var other = await host.Register(new { runId = NewRunId("other"), board = $"other-{tag}", participant = "cy" });
        var stuck = await host.Register(new { runId = NewRunId("stuck"), board, participant = "dee", leaseSeconds = 3600 });
        var alive = await host.Register(new { runId = NewRunId("alive"), board, participant = "eve", leaseSeconds = 3600 });
        await host.Claim(stuck);
        var aliveToken = await host.Claim(alive);
        host.Clock.Advance(TimeSpan.FromMinutes(10));
        Assert.Equal(200, (await host.Events(alive, aliveToken, host.Event("heartbeat"))).Status);

        var page = await host.Page(LedgerHost.ReadKey);
        await page.GetByLabel("Board").FillAsync(board);
        await page.GetByLabel("Label (key:value)").FillAsync("region:EU");
        await page.GetByRole(AriaRole.Button, new() { Name = "Filter" }).ClickAsync();
        // The URL changes when the filtered page commits; its content is awaited, not read at once.
        await Assertions.Expect(page).ToHaveURLAsync(new Regex("label=region"));
        var main = page.Locator("main");
        await Assertions.Expect(main).ToContainTextAsync(eu);
        await Assertions.Expect(main).Not.ToContainTextAsync(us);
        await Assertions.Expect(main).Not.ToContainTextAsync(other);

        // Stuck: claimed, no heartbeat for 5 minutes, not yet lost.
        await page.GotoAsync($"/runs?board={board}&stuckFor=300");
        var html = await page.ContentAsync();
        Assert.Contains(stuck, html);
        Assert.DoesNotContain(alive, html);
        Assert.DoesNotContain(eu, html);

        await page.GotoAsync($"/runs?board={board}&status=claimed");
        html = await page.ContentAsync();
        Assert.Contains(stuck, html);
        Assert.Contains(alive, html);
        Assert.DoesNotContain(eu, html);

        // Time range: registered before the first of them: none.
        var before = host.Clock.GetUtcNow().AddDays(-1).ToString("yyyy-MM-ddTHH:mm:ssZ");
        await page.GotoAsync($"/runs?board={board}&to={Uri.EscapeDataString(before)}");
        await Assertions.Expect(page.Locator(".count")).ToContainTextAsync("0 runs");
        await page.GotoAsync($"/runs?board={board}&from={Uri.EscapeDataString(before)}");
        await Assertions.Expect(page.Locator(".count")).ToContainTextAsync("4 runs");

        // A value that is not one: an HTML page naming the field, not problem details.
        var response = await page.GotoAsync("/runs?stuckFor=soon");
        Assert.Equal(422, response!.Status);
        await Assertions.Expect(page.GetByRole(AriaRole.Alert)).ToContainTextAsync("stuckFor");

        await page.GotoAsync($"/runs?board={board}");
        await ConsoleHost.Screenshot(page, "runs");
    }

    [Fact]
    public async Task a_seed_001_ghost_run_shows_its_late_completion_its_refusal_and_its_earlier_states()
    {
        var runId = await host.Register(new { runId = NewRunId("lightning"), leaseSeconds = 60, labels = new { region = "EU" } });
        var token = await host.Claim(runId);
        var finished = host.Clock.GetUtcNow();
        await host.Events(runId, token, host.Event("step.started", fields: new { stepId = "step-1", name = "train" }));
        Assert.Equal(422, (await host.Events(runId, token, host.Event("step.completed", fields: new { outcome = "success" }))).Status);
        host.Clock.Advance(TimeSpan.FromMinutes(65));
        await host.Sweep();
        host.Clock.Advance(TimeSpan.FromMinutes(45));
        Assert.Equal(409, (await host.Events(runId, token, host.Event("run.completed", "ghost-completion", finished))).Status);

        var page = await host.Page(LedgerHost.ReadKey);
        await page.GotoAsync($"/runs/{runId}");
        await Assertions.Expect(page.Locator("dl.facts")).ToContainTextAsync("lost");
        await Assertions.Expect(page.GetByRole(AriaRole.Region, new() { Name = "Current state" })).ToContainTextAsync("late-completion");
        var ghost = page.Locator("tr", new() { HasText = "ghost-completion" });
        await Assertions.Expect(ghost).ToContainTextAsync("run.completed");
        await Assertions.Expect(ghost).ToContainTextAsync("recorded-not-applied");
        await Assertions.Expect(ghost).ToContainTextAsync(finished.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss"));
        var refusals = page.GetByRole(AriaRole.Region, new() { Name = "Refusals for this run" });
        // The step completion without its step id (422, never appended) is in the rejection log.
        await Assertions.Expect(refusals).ToContainTextAsync("invalid-payload");
        await ConsoleHost.Screenshot(page, "run-seed-001");
        await ConsoleHost.ReadmeScreenshot(page);

        // Time travel: the state after the step started (version 3) was claimed-and-running, not lost.
        await page.GetByLabel(new Regex("State at version")).FillAsync("3");
        await page.GetByRole(AriaRole.Button, new() { Name = "Show" }).ClickAsync();
        await Assertions.Expect(page).ToHaveURLAsync(new Regex("version=3"));
        await Assertions.Expect(page.GetByRole(AriaRole.Heading, new() { Name = "State at version 3" })).ToBeVisibleAsync();
        await Assertions.Expect(page.Locator("dl.facts")).ToContainTextAsync("running");
        await Assertions.Expect(page.Locator("dl.facts")).Not.ToContainTextAsync("lost");

        // And each event links to the state after it.
        await page.Locator("tr", new() { HasText = "run.registered" }).GetByRole(AriaRole.Link).First.ClickAsync();
        await Assertions.Expect(page.GetByRole(AriaRole.Heading, new() { Name = "State at version 1" })).ToBeVisibleAsync();
        await Assertions.Expect(page.Locator("dl.facts")).ToContainTextAsync("registered");
    }

    [Fact]
    public async Task a_seed_000_run_shows_completed_before_results_and_what_is_missing()
    {
        var runId = await host.Register(new { runId = NewRunId("codabench"), requiredScores = new[] { "accuracy" }, leaseSeconds = 600 });
        var token = await host.Claim(runId);
        Assert.Equal(200, (await host.Events(runId, token, host.Event("run.started"), host.Event("run.completed"))).Status);

        var page = await host.Page(LedgerHost.ReadKey);
        await page.GotoAsync($"/runs/{runId}");
        var facts = page.Locator("dl.facts");
        await Assertions.Expect(facts).ToContainTextAsync("running");
        await Assertions.Expect(facts).ToContainTextAsync("accuracy");
        await Assertions.Expect(page.Locator("main")).ToContainTextAsync("completed-before-results");
        await ConsoleHost.Screenshot(page, "run-seed-000");

        // A live run can be followed without script: the page reloads itself.
        Assert.Equal(0, await page.Locator("meta[http-equiv=refresh]").CountAsync());
        await page.GetByRole(AriaRole.Link, new() { NameRegex = new Regex("Follow this run") }).ClickAsync();
        await Assertions.Expect(page.Locator("meta[http-equiv=refresh]")).ToHaveAttributeAsync("content", "10");

        await page.GotoAsync("/runs?anomaly=completed-before-results");
        Assert.Contains(runId, await page.ContentAsync());
    }

    [Fact]
    public async Task an_admin_cancels_and_reclassifies_through_the_form_and_a_post_without_the_token_is_refused()
    {
        var running = await host.Register(new { runId = NewRunId("cancel-me"), leaseSeconds = 600 });
        var token = await host.Claim(running);
        await host.Events(running, token, host.Event("run.started"));

        var reader = await host.Page(LedgerHost.ReadKey);
        await reader.GotoAsync($"/runs/{running}");
        Assert.Equal(0, await reader.GetByRole(AriaRole.Button, new() { Name = "Cancel the run" }).CountAsync());

        var admin = await host.Page(LedgerHost.AdminKey);
        await admin.GotoAsync($"/runs/{running}");

        // A cross-site post carries the cookie but not the form's token: refused, nothing changes.
        var forged = await admin.APIRequest.PostAsync($"/runs/{running}/cancel", new() { Form = admin.APIRequest.CreateFormData().Set("reason", "forged") });
        Assert.Equal(400, forged.Status);
        Assert.Contains("antiforgery", await forged.TextAsync());
        Assert.Equal("running", (await host.Send(HttpMethod.Get, $"/api/runs/{running}", LedgerHost.AdminKey)).Body!["status"]!.GetValue<string>());

        await admin.GetByLabel("Reason for cancelling").FillAsync("operator stopped a stuck job");
        await admin.GetByRole(AriaRole.Button, new() { Name = "Cancel the run" }).ClickAsync();
        await Assertions.Expect(admin.GetByRole(AriaRole.Status)).ToContainTextAsync("cancelled");
        var run = (await host.Send(HttpMethod.Get, $"/api/runs/{running}", LedgerHost.AdminKey)).Body!;
        Assert.Equal("cancelled", run["status"]!.GetValue<string>());
        Assert.Equal("operator stopped a stuck job", run["reason"]!.GetValue<string>());

        // Reclassify the cancelled run, audited under the operator's name like the API twin.
        await admin.GetByLabel("New status").SelectOptionAsync("failed");
        await admin.GetByLabel("Reason", new() { Exact = true }).FillAsync("the worker crashed first");
        await admin.GetByLabel(new Regex("Evidence")).FillAsync("ticket-42\nlog://worker-1");
        await admin.GetByLabel("Your name").FillAsync("dana");
        await admin.GetByRole(AriaRole.Button, new() { Name = "Reclassify" }).ClickAsync();
        await Assertions.Expect(admin.GetByRole(AriaRole.Status)).ToContainTextAsync("reclassified");
        run = (await host.Send(HttpMethod.Get, $"/api/runs/{running}", LedgerHost.AdminKey)).Body!;
        Assert.Equal("failed", run["status"]!.GetValue<string>());
        var verdict = run["verdicts"]!.AsArray()[^1]!;
        Assert.Equal("operator:dana", verdict["decidedBy"]!.GetValue<string>());
        await Assertions.Expect(admin.Locator("tr", new() { HasText = "run.reclassified" })).ToContainTextAsync("applied");

        // A reader's session, even with its own valid token, cannot act.
        await reader.GotoAsync($"/runs/{running}");
        var field = await reader.Locator("form.sign-out input[type=hidden]").GetAttributeAsync("name");
        var value = await reader.Locator("form.sign-out input[type=hidden]").GetAttributeAsync("value");
        var refused = await reader.APIRequest.PostAsync($"/runs/{running}/reclassify",
            new() { Form = reader.APIRequest.CreateFormData().Set(field!, value!).Set("status", "succeeded").Set("reason", "x").Set("evidence", "y").Set("operator", "z") });
        Assert.Equal(403, refused.Status);
    }

    [Fact]
    public async Task everything_a_worker_sent_is_shown_as_text_and_no_script_runs()
    {
        const string script = "<script>window.__pwned = 1</script>";
        const string img = "<img src=x onerror=\"window.__pwned = 2\">";
        const string svg = "<svg onload=\"window.__pwned = 3\"><script>window.__pwned = 4</script></svg>";
        var runId = await host.Register(new
        {
            runId = NewRunId("hostile"), board = await host.Board("hostile-board"), participant = img,
            labels = new { note = script, shape = svg }, leaseSeconds = 600, requiredOutputs = new[] { "model" },
        });
        var token = await host.Claim(runId, worker: svg);
        Assert.Equal(200, (await host.Events(runId, token,
            host.Event("step.started", fields: new { stepId = "s1", name = img }),
            host.Event("log", fields: new { lines = new[] { script, svg, "\"'><b>bold</b>" } }),
            host.Event("output.recorded", fields: new { name = "model", uri = "javascript:window.__pwned=5" }),
            host.Event("run.failed", fields: new { errorClass = "provider", message = svg }))).Status);

        // A reason and an operator's name with markup, through the API twin of the console's form.
        var (reclassified, body) = await host.Send(HttpMethod.Post, $"/api/runs/{runId}/reclassify", LedgerHost.AdminKey,
            new { status = "lost", reason = script + svg, evidence = new[] { img }, @operator = "<i>mallory</i>" });
        Assert.True(reclassified == 200, $"reclassify answered {reclassified}: {body}");
        // A refused event whose payload (kept in the rejection log) is markup.
        var (refused, _) = await host.Events(runId, token, host.Event("step.completed", fields: new { outcome = svg }));
        Assert.True(refused >= 400);

        var page = await host.Page(LedgerHost.AdminKey);
        var dialogs = 0;
        page.Dialog += (_, d) => { dialogs++; _ = d.DismissAsync(); };
        var violations = new List<string>();
        page.Console += (_, m) => { if (m.Text.Contains("Content Security Policy")) violations.Add(m.Text); };

        foreach (var path in new[] { $"/runs/{runId}", "/runs?board=hostile-board", "/runs", "/rejections", "/anomalies", "/boards/hostile-board" })
        {
            var response = await page.GotoAsync(path);
            var csp = await response!.HeaderValueAsync("content-security-policy");
            Assert.Contains("default-src 'none'", csp);
            Assert.DoesNotContain("unsafe-inline", csp);
            await page.Locator("details").EvaluateAllAsync<int>("ds => { ds.forEach(d => d.open = true); return ds.length; }");
            Assert.Null(await page.EvaluateAsync<int?>("() => window.__pwned ?? null"));
            Assert.Equal(0, await page.Locator("main script, main img, main svg:not(.chart), main b, main i").CountAsync());
            Assert.Equal(0, await page.Locator("a[href^='javascript']").CountAsync());
        }
        await page.GotoAsync($"/runs/{runId}");
        var text = await page.Locator("main").InnerTextAsync();
        Assert.Contains(script, text);
        Assert.Contains(img, text);
        Assert.Contains(svg, text);
        Assert.Contains(script + svg, text); // the reclassification's reason
        Assert.Contains("operator:<i>mallory</i>", text);
        Assert.Equal(0, dialogs);
        Assert.Empty(violations);
    }

    [Fact]
    public async Task the_pages_are_readable_at_phone_width_and_errors_are_html()
    {
        await host.Register(new { runId = NewRunId("phone"), board = await host.Board("phone-board"), participant = "ana", labels = new { region = "EU" } });
        var page = await host.Page(LedgerHost.ReadKey, width: 390, height: 844);
        foreach (var path in new[] { "/runs", "/" })
        {
            await page.GotoAsync(path);
            var overflow = await page.EvaluateAsync<int>("() => document.documentElement.scrollWidth - window.innerWidth");
            Assert.True(overflow <= 1, $"{path} is {overflow}px wider than a phone");
        }
        await page.GotoAsync("/runs");
        await ConsoleHost.Screenshot(page, "runs-phone");

        var missing = await page.GotoAsync("/runs/no-such-run");
        Assert.Equal(404, missing!.Status);
        Assert.StartsWith("text/html", await missing.HeaderValueAsync("content-type"));
        var unknown = await page.GotoAsync("/no-such-page");
        Assert.Equal(404, unknown!.Status);
        Assert.StartsWith("text/html", await unknown.HeaderValueAsync("content-type"));
    }

    [Fact]
    public async Task anomalies_kpis_a_batch_a_board_then_and_now_and_the_rejection_log_come_from_real_runs()
    {
        var tag = Guid.NewGuid().ToString("N")[..6];
        var board = await host.Board($"kaggle-{tag}");
        var batch = $"fanout-{tag}";
        var first = NewRunId("first");
        var second = NewRunId("second");
        var (status, json) = await host.Send(HttpMethod.Post, "/api/batches", LedgerHost.AdminKey,
            new { id = batch, runIds = new[] { first, second, NewRunId("never") } });
        Assert.True(status == 201, $"batch answered {status}: {json}");

        var a = await host.Register(new { runId = first, board, participant = "ana", batch, requiredScores = new[] { "accuracy" }, leaseSeconds = 600 });
        var token = await host.Claim(a);
        Assert.Equal(200, (await host.Events(a, token, host.Event("scores.reported", fields: new { scores = new { accuracy = 0.91 } }), host.Event("run.completed"))).Status);
        var before = host.Clock.GetUtcNow();
        host.Clock.Advance(TimeSpan.FromMinutes(5));
        var b = await host.Register(new { runId = second, board, participant = "ben", batch, requiredScores = new[] { "accuracy" }, leaseSeconds = 600 });
        token = await host.Claim(b);
        Assert.Equal(200, (await host.Events(b, token, host.Event("run.completed"))).Status); // completed before results
        Assert.Equal(200, (await host.Events(b, token, host.Event("scores.reported", fields: new { scores = new { accuracy = 0.97 } }))).Status);
        await host.Services.GetRequiredService<Marten.IDocumentStore>().WaitForNonStaleProjectionDataAsync(TimeSpan.FromSeconds(30));

        var page = await host.Page(LedgerHost.ReadKey);

        // The board now: ben first; as of before ben's verdict: ana alone. Rows link to the runs.
        await page.GotoAsync($"/boards/{board}");
        var rows = page.Locator("main table tbody tr");
        await Assertions.Expect(rows).ToHaveCountAsync(2);
        await Assertions.Expect(rows.First).ToContainTextAsync("ben");
        await ConsoleHost.Screenshot(page, "board");
        await page.GetByLabel("As of (UTC time)").FillAsync(before.AddSeconds(1).ToString("O"));
        await page.GetByRole(AriaRole.Button, new() { Name = "Show" }).ClickAsync();
        await Assertions.Expect(rows).ToHaveCountAsync(1);
        await Assertions.Expect(rows.First).ToContainTextAsync("ana");
        await rows.First.GetByRole(AriaRole.Link, new() { Name = a }).ClickAsync();
        await Assertions.Expect(page.GetByRole(AriaRole.Heading, new() { Name = $"Run {a}" })).ToBeVisibleAsync();
        await page.GoBackAsync();
        await rows.First.GetByRole(AriaRole.Link, new() { Name = "the verdict that put it here" }).ClickAsync();
        await Assertions.Expect(page.Locator("tr#verdict")).ToContainTextAsync("verdict.reached");
        await Assertions.Expect(page.Locator("tr#verdict")).ToContainTextAsync("succeeded");

        // The batch: expected against reported, the missing run, counts by status.
        await page.GotoAsync($"/batches/{batch}");
        var main = page.Locator("main");
        await Assertions.Expect(main).ToContainTextAsync("never-");
        await Assertions.Expect(page.Locator("dl.facts")).ToContainTextAsync("3");
        await Assertions.Expect(main).ToContainTextAsync("succeeded");

        // Anomalies with counts by kind.
        await page.GotoAsync("/anomalies");
        await Assertions.Expect(page.Locator("table.small")).ToContainTextAsync("completed-before-results");
        await page.GetByRole(AriaRole.Link, new() { Name = "completed-before-results" }).ClickAsync();
        Assert.Contains(b, await page.ContentAsync());

        // KPIs with charts drawn on the server.
        await page.GotoAsync("/kpis");
        await Assertions.Expect(page.Locator("svg.chart")).ToHaveCountAsync(3);
        Assert.True(await page.Locator("svg.chart rect.c-succeeded").CountAsync() >= 1);
        await ConsoleHost.Screenshot(page, "kpis");
        await page.GetByLabel("Bucket").SelectOptionAsync("hour");
        await page.GetByRole(AriaRole.Button, new() { Name = "Show" }).ClickAsync();
        await Assertions.Expect(page.Locator(".count")).ToContainTextAsync("hours");

        // The rejection log: a refused event of an authenticated worker (seed 001's step completion without its step id).
        var c = await host.Register(new { runId = NewRunId("refused"), leaseSeconds = 600 });
        token = await host.Claim(c);
        Assert.Equal(422, (await host.Events(c, token, host.Event("step.completed", fields: new { outcome = "success" }))).Status);
        await page.GotoAsync("/rejections");
        var refused = page.Locator("main table").First.Locator("tr", new() { HasText = c });
        await Assertions.Expect(refused).ToContainTextAsync("invalid-payload");
        // Its caller, as the over-budget counts name it: the start of the token's digest, never the token.
        await Assertions.Expect(refused.Locator("td", new() { HasText = Ledger.Infrastructure.Access.DigestHex(token)[..16] })).ToHaveCountAsync(1);
        await Assertions.Expect(refused).Not.ToContainTextAsync(token);
        await ConsoleHost.Screenshot(page, "rejections");
    }
}
