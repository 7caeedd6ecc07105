using FluentValidation;
using Ledger.Contract;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Ledger.Labels;
using Ledger.Runs;
using Ledger.Web.Pages;
using Marten;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Ledger.Web;

/// <summary>
/// The console: server-rendered pages over the same queries and decisions as the API. Every
/// page needs a session (a read key or the admin key signed in through the form); every post
/// needs the session's antiforgery token; operator actions need an admin session.
/// </summary>
public static class ConsoleEndpoints
{
    public const int EventsPerPage = 200;

    public static void MapLedgerConsole(this WebApplication app)
    {
        var console = app.MapGroup("").ExcludeFromDescription();

        console.MapGet("/console.css", () => Results.Text(ConsoleStyle.Css, "text/css; charset=utf-8"));

        console.MapGet("/", async (HttpContext context) =>
            await ConsoleSetup.SessionOf(context) is not null
                ? Results.Redirect("/runs")
                : Page<SignInPage>(new { Form = ConsoleSetup.Form(context) }));

        console.MapPost("/sign-in", async (HttpContext context, Access access) =>
        {
            if (!await ConsoleSetup.Genuine(context))
            {
                return Page<SignInPage>(new { Form = ConsoleSetup.Form(context), Error = "The form had expired; sign in again." }, 400);
            }
            var form = await context.Request.ReadFormAsync(context.RequestAborted);
            var key = form["key"].ToString();
            if (key.Length is 0 or > 1024 || await ConsoleSetup.SignIn(context, access, key) is null)
            {
                // The key itself is never echoed, logged or kept.
                return Page<SignInPage>(new { Form = ConsoleSetup.Form(context), Error = "That key is not a read key or the admin key of this ledger." }, 401);
            }
            return Results.Redirect("/runs", permanent: false, preserveMethod: false);
        }).RequireRateLimiting(ConsoleSetup.SignInPolicy).DisableAntiforgery();

        console.MapPost("/sign-out", async (HttpContext context) =>
        {
            await ConsoleSetup.SessionOf(context);
            if (!await ConsoleSetup.Genuine(context)) return Refused(null);
            await ConsoleSetup.SignOut(context);
            return Results.Redirect("/");
        }).DisableAntiforgery();

        console.MapGet("/runs", async (HttpContext context, IDocumentStore store, LabelVocabulary vocabulary, TimeProvider clock,
            string? status, string? board, string? batch, string? label, string? anomaly, string? stuckFor, string? from, string? to,
            int? page, int? pageSize) =>
        {
            if (await ConsoleSetup.SessionOf(context) is not { } session) return ToSignIn();
            var now = clock.GetUtcNow();
            var size = Math.Clamp(pageSize ?? Paging.DefaultPageSize, 1, Paging.MaxPageSize);
            var number = Math.Clamp(page ?? 1, 1, Paging.MaxOffset / size + 1);
            var query = new RunsQuery(status, board, batch, label, anomaly, stuckFor, from, to, size);
            var (filter, refusal) = RunFilter.Parse(status, board, null, batch, anomaly, label, from, to, stuckFor, vocabulary);
            if (refusal is not null)
            {
                return Page<RunsPage>(new { Session = session, Model = new RunsModel(query, [], 0, 1, size, refusal.Errors, now) }, 422);
            }
            await using var db = store.QuerySession();
            var runs = await filter!.Apply(db.Query<Run>(), now)
                .OrderByDescending(r => r.RegisteredAt).ThenBy(r => r.Id)
                .Skip((number - 1) * size).Take(size).ToListAsync(context.RequestAborted);
            var total = await filter.Apply(db.Query<Run>(), now).CountAsync(context.RequestAborted);
            var archived = await Ledger.Retention.ArchivedRunStore.ArchivedAmongAsync(db, store.Options.DatabaseSchemaName, runs.Select(r => r.Id).ToArray(), context.RequestAborted);
            return Page<RunsPage>(new { Session = session, Model = new RunsModel(query, runs.ToList(), total, number, size, null, now, archived) });
        });

        console.MapGet("/runs/{id}", async (string id, HttpContext context, RunHistoryReader history, long? version, long? after, string? notice, string? follow) =>
        {
            if (await ConsoleSetup.SessionOf(context) is not { } session) return ToSignIn();
            var model = await LoadRun(id, history, version, after, context.RequestAborted);
            if (model is null) return NotFound(session, $"There is no run {id}.");
            return Page<RunDetailPage>(new { Session = session, Model = model with { Notice = Known(notice), Follow = follow == "1" && version is null } });
        });

        console.MapPost("/runs/{id}/cancel", async (string id, HttpContext context, RunWriter writer,
            IValidator<CancelRun> validator, RejectionLog rejections, RunHistoryReader history) =>
        {
            var (session, refused) = await Admin(context);
            if (refused is not null) return refused;
            var form = await context.Request.ReadFormAsync(context.RequestAborted);
            var reason = form["reason"].ToString();
            var request = new CancelRun { Reason = string.IsNullOrWhiteSpace(reason) ? null : reason };
            if (Invalid(validator.Validate(request)) is { } invalid) return await Again(id, session!, history, invalid, 422, context.RequestAborted);
            return await Acted(id, context, session!, history, rejections, "cancelled",
                await writer.Submit(new CancelCommand(id, request.Reason)));
        }).DisableAntiforgery();

        console.MapPost("/runs/{id}/reclassify", async (string id, HttpContext context, RunWriter writer,
            IValidator<ReclassifyRun> validator, RejectionLog rejections, RunHistoryReader history) =>
        {
            var (session, refused) = await Admin(context);
            if (refused is not null) return refused;
            var form = await context.Request.ReadFormAsync(context.RequestAborted);
            RunStatus? status = Enum.TryParse<RunStatus>(form["status"].ToString(), ignoreCase: true, out var s) && !int.TryParse(form["status"], out _) ? s : null;
            var request = new ReclassifyRun
            {
                Status = status,
                Reason = form["reason"].ToString(),
                Evidence = form["evidence"].ToString().Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).ToList(),
                Operator = string.IsNullOrWhiteSpace(form["operator"]) ? null : form["operator"].ToString().Trim(),
            };
            if (request.Operator is null) return await Again(id, session!, history, "operator: Name yourself; the decision is audited under your name.", 422, context.RequestAborted);
            if (Invalid(validator.Validate(request)) is { } invalid) return await Again(id, session!, history, invalid, 422, context.RequestAborted);
            return await Acted(id, context, session!, history, rejections, "reclassified",
                await writer.Submit(request.ToCommand(id)));
        }).DisableAntiforgery();

        MapForensics(console);
    }

    private static void MapForensics(RouteGroupBuilder console)
    {
        console.MapGet("/anomalies", async (HttpContext context, IDocumentStore store, KpiStore kpis, string? kind, int? page) =>
        {
            if (await ConsoleSetup.SessionOf(context) is not { } session) return ToSignIn();
            var number = Math.Clamp(page ?? 1, 1, 100_000);
            kind = string.IsNullOrWhiteSpace(kind) ? null : kind;
            await using var db = store.QuerySession();
            IQueryable<AnomalyRecord> query = db.Query<AnomalyRecord>();
            if (kind is not null) query = query.Where(a => a.Kind == kind);
            var items = await query.OrderByDescending(a => a.At).ThenBy(a => a.Id).Skip((number - 1) * 50).Take(50).ToListAsync(context.RequestAborted);
            var total = await query.CountAsync(context.RequestAborted);
            // By kind: the kept counters, the same numbers as GET /api/kpis.
            var counts = GetKpisEndpoint.From(await kpis.ReadTotalsAsync(context.RequestAborted)).AnomaliesByKind;
            return Page<AnomaliesPage>(new { Session = session, Counts = counts, Items = items.ToList(), Kind = kind, Total = (long)total, Page = number, PageSize = 50 });
        });

        console.MapGet("/rejections", async (HttpContext context, IDocumentStore store, CountedRefusals counted,
            TimeProvider clock, string? reason, string? runId, int? page) =>
        {
            if (await ConsoleSetup.SessionOf(context) is not { } session) return ToSignIn();
            var number = Math.Clamp(page ?? 1, 1, 100_000);
            reason = string.IsNullOrWhiteSpace(reason) ? null : reason;
            runId = string.IsNullOrWhiteSpace(runId) ? null : runId;
            await using var db = store.QuerySession();
            IQueryable<Rejection> query = db.Query<Rejection>();
            if (reason is not null) query = query.Where(r => r.Reason == reason);
            if (runId is not null) query = query.Where(r => r.RunId == runId);
            var items = await query.OrderByDescending(r => r.At).Skip((number - 1) * 50).Take(50).ToListAsync(context.RequestAborted);
            var total = await query.CountAsync(context.RequestAborted);
            var counts = await counted.ReadAsync(clock.GetUtcNow().AddDays(-7), reason, authenticated: false, context.RequestAborted);
            var overBudget = await counted.ReadAsync(clock.GetUtcNow().AddDays(-7), reason, authenticated: true, context.RequestAborted);
            return Page<RejectionsPage>(new { Session = session, Items = items.ToList(), Unauthenticated = counts, OverBudget = overBudget, Reason = reason, RunId = runId, Total = (long)total, Page = number });
        });

        console.MapGet("/kpis", async (HttpContext context, KpiStore store, CountedRefusals counted,
            TimeProvider clock, string? bucket) =>
        {
            if (await ConsoleSetup.SessionOf(context) is not { } session) return ToSignIn();
            var kpis = await GetKpisEndpoint.Compute(store, counted, context.RequestAborted);
            var series = await ChartSeries(store, bucket is "hour" or "day" ? bucket : null, clock.GetUtcNow(), context.RequestAborted);
            return Page<KpisPage>(new { Session = session, Kpis = kpis, Series = series, Bucket = bucket is "hour" or "day" ? bucket : "auto" });
        });

        console.MapGet("/boards", async (HttpContext context, IDocumentStore store, int? page) =>
        {
            if (await ConsoleSetup.SessionOf(context) is not { } session) return ToSignIn();
            var boards = await Ledger.Leaderboards.ListBoardsEndpoint.PageAsync(store, Math.Clamp(page ?? 1, 1, 100_000), Paging.DefaultPageSize, context.RequestAborted);
            return Page<BoardsPage>(new { Session = session, Boards = boards });
        });

        console.MapGet("/batches", async (HttpContext context, IDocumentStore store, int? page) =>
        {
            if (await ConsoleSetup.SessionOf(context) is not { } session) return ToSignIn();
            var batches = await Ledger.Batches.ListBatchesEndpoint.PageAsync(store, Math.Clamp(page ?? 1, 1, 100_000), Paging.DefaultPageSize, context.RequestAborted);
            return Page<BatchesPage>(new { Session = session, Batches = batches });
        });

        console.MapGet("/batches/{id}", async (string id, HttpContext context, IDocumentStore store, LabelVocabulary vocabulary,
            Microsoft.Extensions.Options.IOptions<Ledger.Batches.BatchOptions> options, TimeProvider clock) =>
        {
            if (await ConsoleSetup.SessionOf(context) is not { } session) return ToSignIn();
            var view = await Ledger.Batches.GetBatchEndpoint.Load(id, store, vocabulary, options.Value, clock, context.RequestAborted);
            return view is null ? NotFound(session, $"There is no batch {id}.") : Page<BatchPage>(new { Session = session, View = view });
        });

        console.MapGet("/boards/{id}", async (string id, HttpContext context, IDocumentStore store, Ledger.Leaderboards.BoardCatalog boards,
            ReadDatabase database, StorageNames names, string? at, int? page) =>
        {
            if (await ConsoleSetup.SessionOf(context) is not { } session) return ToSignIn();
            var board = await boards.Find(id, context.RequestAborted);
            if (board is null) return NotFound(session, $"There is no board {id}.");
            var number = Math.Clamp(page ?? 1, 1, 100_000);
            at = string.IsNullOrWhiteSpace(at) ? null : at;
            if (!QueryValues.TryTime(at, "at", out var asOf, out _))
            {
                var (now, count) = await Ledger.Leaderboards.GetLeaderboardEndpoint.Current(database, names, board, number, 100, context.RequestAborted);
                return Page<BoardPage>(new { Session = session, At = at, Error = "at: an ISO 8601 time is required, e.g. 2026-11-30T12:00:00Z.",
                    Board = new Ledger.Leaderboards.Leaderboard(id, board.Ranking, null, number, 100, count, now) }, 422);
            }
            if (asOf is { } time)
            {
                var (then, thenTotal) = await Ledger.Leaderboards.GetLeaderboardEndpoint.Read(database, names, board, time, number, 100, context.RequestAborted);
                return Page<BoardPage>(new { Session = session, Board = new Ledger.Leaderboards.Leaderboard(id, board.Ranking, time, number, 100, thenTotal, then), At = at });
            }
            var (rows, total) = await Ledger.Leaderboards.GetLeaderboardEndpoint.Current(database, names, board, number, 100, context.RequestAborted);
            return Page<BoardPage>(new { Session = session, Board = new Ledger.Leaderboards.Leaderboard(id, board.Ranking, null, number, 100, total, rows) });
        });
    }

    /// <summary>The KPI charts' series, over the range <see cref="KpiChartRange"/> decides, within the API's default window (30 days, 48 hours).</summary>
    private static async Task<KpiSeries> ChartSeries(KpiStore store, string? bucket, DateTimeOffset now, CancellationToken ct)
    {
        var (days, _) = GetKpiSeriesEndpoint.Window("day", null, null, now);
        var byDay = await GetKpiSeriesEndpoint.Compute(store, days!, ct);
        var unit = KpiChartRange.Unit(byDay, bucket, now);
        if (unit == "day") return KpiChartRange.Trim(byDay);
        var (hours, _) = GetKpiSeriesEndpoint.Window("hour", null, null, now);
        return KpiChartRange.Trim(await GetKpiSeriesEndpoint.Compute(store, hours!, ct));
    }


    private static string? Known(string? code) => code switch
    {
        null => null,
        "cancelled" => "The run was cancelled.",
        "reclassified" => "The run was reclassified; the earlier verdict is kept in its history.",
        // Only the ledger's own notices: a link cannot put words of its own into the page.
        _ => null,
    };

    /// <summary>The run's page again, saying why the action was refused.</summary>
    /// <summary>After an operator action's decision: back to the run with the notice, or the refusal kept and shown on the run's page.</summary>
    private static async Task<IResult> Acted(string id, HttpContext context, ConsoleSession session, RunHistoryReader history,
        RejectionLog rejections, string notice, Decision decision)
    {
        if (decision.Refusal is { } refusal)
        {
            var problem = refusal.ToProblem(id);
            await rejections.Refuse(context, problem);
            return await Again(id, session, history, $"Refused ({problem.Code}): {problem.Detail ?? problem.Title}", problem.Status, context.RequestAborted);
        }
        return Results.Redirect($"/runs/{Uri.EscapeDataString(id)}?notice={notice}");
    }

    private static async Task<IResult> Again(string id, ConsoleSession session, RunHistoryReader history, string error, int status, CancellationToken ct)
    {
        var model = await LoadRun(id, history, null, null, ct);
        return model is null
            ? NotFound(session, $"There is no run {id}.")
            : Page<RunDetailPage>(new { Session = session, Model = model with { Error = error } }, status);
    }

    private static string? Invalid(FluentValidation.Results.ValidationResult result) =>
        result.IsValid ? null : string.Join(" ", result.Errors.Select(e => $"{e.PropertyName}: {e.ErrorMessage}"));

    /// <summary>Null when this post comes from an admin session's own form; else the HTML refusal.</summary>
    private static async Task<(ConsoleSession? Session, IResult? Refusal)> Admin(HttpContext context)
    {
        var session = await ConsoleSetup.SessionOf(context);
        if (session is null) return (null, Message(null, "Sign in first", "Operator actions need an admin session.", 401));
        if (!await ConsoleSetup.Genuine(context)) return (session, Refused(session));
        if (!session.IsAdmin) return (session, Message(session, "Not allowed", "Only an admin session can cancel or reclassify a run.", 403));
        return (session, null);
    }

    private static IResult Refused(ConsoleSession? session) =>
        Message(session, "Request refused", "The form did not carry this session's antiforgery token (a cross-site request, or an expired page). Nothing was changed.", 400);

    /// <summary>The run now, one page of its history and, at a version, the state it had then: read as the API reads them (<see cref="RunHistoryReader"/>).</summary>
    public static async Task<RunModel?> LoadRun(string id, RunHistoryReader history, long? version, long? after, CancellationToken ct)
    {
        var from = Math.Max(0, after ?? 0);
        await using var reading = await history.OpenAsync(id, from, null, ct);
        if (reading.Current is not { } current) return null;

        RunView shown = RunView.From(current);
        long? asOf = null;
        DateTimeOffset? asOfAt = null;
        if (version is { } v && v >= 1 && v < current.Version)
        {
            await using var then = await history.OpenAsync(id, v, null, ct);
            if (await history.StateAsync(then, v, null, ct) is { Run: { } run, Last: { } last })
            {
                shown = RunView.From(run);
                asOf = last.Version;
                asOfAt = last.RecordedAt;
            }
        }

        var page = await history.PageAsync(reading, from, EventsPerPage, ct);
        long? next = page.Count == EventsPerPage && page[^1].Version < current.Version ? page[^1].Version : null;
        var refusals = await reading.Session.Query<Rejection>().Where(r => r.RunId == id).OrderByDescending(r => r.At).Take(100).ToListAsync(ct);
        return new RunModel(current, shown, asOf, asOfAt, page, from, next, refusals.ToList(), null, null, ArchivedThrough: reading.Archive?.ArchivedVersion);
    }

    public static IResult ToSignIn() => Results.Redirect("/");

    public static IResult NotFound(ConsoleSession? session, string message) => Message(session, "Not found", message, 404);

    public static IResult Message(ConsoleSession? session, string title, string message, int status) =>
        Page<MessagePage>(new { Session = session, Title = title, Message = message }, status);

    public static IResult Page<T>(object parameters, int status = 200) where T : Microsoft.AspNetCore.Components.IComponent =>
        new RazorComponentResult<T>(parameters) { StatusCode = status };
}
