using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Ledger.Contract;
using Ledger.Tests.Fixtures;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Runs;

/// <summary>
/// Random hostile strings (NUL, control characters, lone surrogates, 64 KB values, deep JSON)
/// thrown at every write and query route. A valid value is recorded exactly once, an invalid one
/// is a 4xx problem with nothing appended, and nothing is ever a 5xx. The seed is printed on
/// failure; LEDGER_HOSTILE_SEED replays one.
/// </summary>
public sealed class HostileInputTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);
    private readonly HttpClient _http = ledger.Host.Server.CreateClient();

    private static readonly string[] Pieces =
    [
        "plain", "a.b-c_d", "\u0000", "\u0001", "\u001b[31m", "\u007f", "\t", "\n", " ", "é", "\U0001F600",
        "\uD800", "\uDBFF", "\uDC00", "\uDFFF", "\u2028", "\uFFFD", "%00", "\\u0000", "'; drop table x; --", "<script>",
    ];

    private static int Seed() =>
        int.TryParse(Environment.GetEnvironmentVariable("LEDGER_HOSTILE_SEED"), out var seed) ? seed : Environment.TickCount;

    private static string HostileValue(Random random)
    {
        if (random.Next(20) == 0) return new string('x', 64 * 1024) + Pieces[random.Next(Pieces.Length)];
        var text = new StringBuilder();
        for (var n = random.Next(1, 5); n > 0; n--) text.Append(Pieces[random.Next(Pieces.Length)]);
        return text.ToString();
    }

    /// <summary>What the ledger promises about a value: storable text, and for identifiers no control characters.</summary>
    private static bool Storable(string value) => InputTextModel.Unstorable(value) is false;
    private static bool Identifier(string value, int maxLength, bool blankAllowed = false) =>
        Storable(value) && !value.Any(char.IsControl) && value.Length is > 0 && value.Length <= maxLength
        && (blankAllowed || !string.IsNullOrWhiteSpace(value));

    private enum Route
    {
        LogLine, EventId, StepId, Participant, LabelValue, Worker, ObservationSource, FailureMessage, CancelReason,
        ReclassifyOperator, BoardScore, BatchRunId, DeepJson,
    }

    [Fact]
    public async Task hostile_strings_at_every_write_route_are_recorded_exactly_once_or_refused_with_nothing_appended()
    {
        var seed = Seed();
        var random = new Random(seed);
        var (runId, token) = await _api.Started();
        var accepted = new List<string>();
        var context = $"seed {seed} (replay with LEDGER_HOSTILE_SEED={seed})";

        for (var i = 0; i < 250; i++)
        {
            var route = (Route)random.Next(Enum.GetValues<Route>().Length);
            var value = HostileValue(random);
            var eventId = $"h{i}";
            var at = DateTimeOffset.UnixEpoch.ToString("O", CultureInfo.InvariantCulture);
            string body;
            string url = $"/api/runs/{runId}/events";
            string key = token;
            bool valid;
            Func<Response, Task>? recorded = null;
            switch (route)
            {
                case Route.LogLine:
                    body = $"{{\"type\":\"log\",\"eventId\":\"{eventId}\",\"occurredAt\":\"{at}\",\"lines\":[{Json(value)}]}}";
                    valid = Storable(value) && value.Length <= 16 * 1024;
                    break;
                case Route.EventId:
                    eventId = $"h{i}-{value}";
                    body = $"{{\"type\":\"heartbeat\",\"eventId\":{Json(eventId)},\"occurredAt\":\"{at}\"}}";
                    valid = Identifier(eventId, 200);
                    break;
                case Route.StepId:
                    body = $"{{\"type\":\"step.started\",\"eventId\":\"{eventId}\",\"occurredAt\":\"{at}\",\"stepId\":{Json(value)},\"name\":\"s\"}}";
                    valid = Identifier(value, 200);
                    break;
                case Route.FailureMessage:
                    // Keep the run alive: a failure message is judged by the validator of run.failed, on a run of its own.
                    var (failing, failingToken) = await _api.Started();
                    url = $"/api/runs/{failing}/events";
                    key = failingToken;
                    body = $"{{\"type\":\"run.failed\",\"eventId\":\"{eventId}\",\"occurredAt\":\"{at}\",\"errorClass\":\"provider\",\"message\":{Json(value)}}}";
                    valid = Storable(value) && value.Length <= 8 * 1024;
                    recorded = async _ =>
                    {
                        var run = await _api.Run(failing);
                        Assert.Equal(valid ? "failed" : "claimed", run["status"]!.GetValue<string>());
                        if (valid) Assert.Equal(value, run["errorMessage"]!.GetValue<string>());
                    };
                    break;
                case Route.Participant:
                case Route.LabelValue:
                    var newRun = NewRunId();
                    url = "/api/runs";
                    key = LedgerHost.AdminKey;
                    body = route == Route.Participant
                        ? $"{{\"runId\":\"{newRun}\",\"participant\":{Json(value)}}}"
                        : $"{{\"runId\":\"{newRun}\",\"labels\":{{\"hostile\":{Json(value)}}}}}";
                    valid = Identifier(value, 200, blankAllowed: route == Route.LabelValue);
                    recorded = async _ =>
                    {
                        var run = await _api.Run(newRun);
                        Assert.Equal(value, route == Route.Participant
                            ? run["participant"]!.GetValue<string>()
                            : run["labels"]!["hostile"]!.GetValue<string>());
                    };
                    if (!valid) recorded = async _ => Assert.Equal(HttpStatusCode.NotFound, (await _api.GetRun(newRun)).Status);
                    break;
                case Route.Worker:
                    var unclaimed = await _api.Register();
                    url = $"/api/runs/{unclaimed}/claim";
                    key = LedgerHost.WorkerKey;
                    body = $"{{\"worker\":{Json(value)}}}";
                    valid = Identifier(value, 200);
                    recorded = async _ =>
                    {
                        var run = await _api.Run(unclaimed);
                        Assert.Equal(valid ? "claimed" : "registered", run["status"]!.GetValue<string>());
                        if (valid) Assert.Equal(value, run["lease"]!["worker"]!.GetValue<string>());
                    };
                    break;
                case Route.ObservationSource:
                    url = $"/api/runs/{runId}/observations";
                    key = LedgerHost.WorkerKey;
                    // A distinct time per step, so that no two observations are the same one repeated.
                    var observedAt = DateTimeOffset.UnixEpoch.AddSeconds(i).ToString("O", CultureInfo.InvariantCulture);
                    body = $"{{\"source\":{Json(value)},\"status\":\"running\",\"observedAt\":\"{observedAt}\"}}";
                    valid = Identifier(value, 200);
                    break;
                case Route.CancelReason:
                    var (cancelled, _) = await _api.Started();
                    url = $"/api/runs/{cancelled}/cancel";
                    key = LedgerHost.AdminKey;
                    body = $"{{\"reason\":{Json(value)}}}";
                    valid = Storable(value) && !string.IsNullOrWhiteSpace(value) && value.Length <= 500;
                    recorded = async _ =>
                    {
                        var run = await _api.Run(cancelled);
                        Assert.Equal(valid ? "cancelled" : "claimed", run["status"]!.GetValue<string>());
                        if (valid) Assert.Equal(value, run["reason"]!.GetValue<string>());
                    };
                    break;
                case Route.ReclassifyOperator:
                    var (overruled, _) = await _api.Started();
                    Assert.Equal(HttpStatusCode.OK, (await _api.Send(HttpMethod.Post, $"/api/runs/{overruled}/cancel", LedgerHost.AdminKey, new { })).Status);
                    url = $"/api/runs/{overruled}/reclassify";
                    key = LedgerHost.AdminKey;
                    body = $"{{\"status\":\"failed\",\"reason\":\"r\",\"evidence\":[\"e\"],\"operator\":{Json(value)}}}";
                    valid = Identifier(value, 200);
                    recorded = async _ => Assert.Equal(valid ? "failed" : "cancelled", (await _api.Run(overruled))["status"]!.GetValue<string>());
                    break;
                case Route.BoardScore:
                    var board = NewRunId("board");
                    url = "/api/boards";
                    key = LedgerHost.AdminKey;
                    body = $"{{\"id\":\"{board}\",\"primaryScore\":{Json(value)},\"direction\":\"max\"}}";
                    valid = Identifier(value, 200);
                    recorded = async _ =>
                    {
                        var read = await _api.Send(HttpMethod.Get, $"/api/boards/{board}", LedgerHost.ReadKey);
                        Assert.Equal(valid ? HttpStatusCode.OK : HttpStatusCode.NotFound, read.Status);
                        if (valid) Assert.Equal(value, read.Json!["ranking"]!["primaryScore"]!.GetValue<string>());
                    };
                    break;
                case Route.BatchRunId:
                    var batch = NewRunId("batch");
                    url = "/api/batches";
                    key = LedgerHost.AdminKey;
                    body = $"{{\"id\":\"{batch}\",\"runIds\":[{Json(value)}]}}";
                    valid = System.Text.RegularExpressions.Regex.IsMatch(value, "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$");
                    recorded = async _ => Assert.Equal(valid ? HttpStatusCode.OK : HttpStatusCode.NotFound,
                        (await _api.Send(HttpMethod.Get, $"/api/batches/{batch}", LedgerHost.ReadKey)).Status);
                    break;
                default:
                    var depth = random.Next(32, 5000);
                    body = $"{{\"type\":\"log\",\"eventId\":\"{eventId}\",\"occurredAt\":\"{at}\",\"lines\":[\"x\"],\"deep\":{new string('[', depth)}{new string(']', depth)}}}";
                    valid = false; // JSON nesting is capped at 32 levels
                    break;
            }

            var response = await Post(url, key, body);
            var what = $"{context}, step {i}: {route} {Describe(value)} -> {response.Code} {Truncate(response.Text)}";
            Assert.True(response.Code < 500, what);
            if (valid)
            {
                Assert.True(response.Code is 200 or 201, what);
                // What the ledger says it appended (a step started twice is a duplicate) must be exactly what the stream holds.
                if (url.EndsWith($"{runId}/events", StringComparison.Ordinal)
                    && response.Json!["results"]![0]!["result"]!.GetValue<string>() != "duplicate") accepted.Add(eventId);
                if (url.EndsWith("/observations", StringComparison.Ordinal)
                    && response.Json!["result"]!.GetValue<string>() != "duplicate") accepted.Add("observation");
            }
            else
            {
                Assert.True(response.Code is >= 400 and < 500, what);
                Assert.Equal("application/problem+json", response.ContentType);
                Assert.False(response.Retryable, what);
                Assert.StartsWith("urn:run-ledger:problem:", response.Json!["type"]!.GetValue<string>());
                if (response.Code == 422) Assert.NotEmpty(response.Json!["errors"]!.AsObject());
            }
            if (recorded is not null) await recorded(response);
        }

        // Exactly the accepted events were appended to the run, each once, in order, with their ids intact.
        var history = await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/events", LedgerHost.ReadKey);
        var events = history.Json!["events"]!.AsArray().Skip(2).ToList(); // registered, claimed
        Assert.True(accepted.Count == events.Count, $"{context}: {accepted.Count} accepted, {events.Count} appended");
        for (var i = 0; i < accepted.Count; i++)
        {
            if (accepted[i] == "observation") Assert.Equal("status.observed", events[i]!["type"]!.GetValue<string>());
            else Assert.Equal(accepted[i], events[i]!["eventId"]!.GetValue<string>());
        }
    }

    [Fact]
    public async Task hostile_query_and_path_values_are_refused_or_answered_never_a_5xx()
    {
        var seed = Seed();
        var random = new Random(seed);
        var (runId, _) = await _api.Started();
        var routes = new[]
        {
            "/api/runs?board={0}", "/api/runs?participant={0}", "/api/runs?batch={0}", "/api/runs?anomaly={0}", "/api/runs?status={0}",
            "/api/runs?page={0}", "/api/runs?pageSize={0}", "/api/anomalies?runId={0}", "/api/anomalies?kind={0}", "/api/anomalies?since={0}",
            "/api/rejections?reason={0}", "/api/rejections?runId={0}", "/api/boards/{0}/leaderboard", "/api/boards/b/leaderboard?at={0}",
            "/api/runs/{0}", "/api/runs/{0}/events", "/api/runs/" + runId + "/state?version={0}", "/api/runs/" + runId + "/state?at={0}",
            "/api/batches/{0}",
        };

        for (var i = 0; i < 300; i++)
        {
            var value = random.Next(4) == 0
                ? random.Next(3) switch { 0 => "2147483647", 1 => "-9223372036854775808", _ => "99999999999999999999" }
                : HostileValue(random);
            var route = routes[random.Next(routes.Length)];
            // A NUL in the path never gets past the HTTP server (Kestrel answers 400 itself, as does the test server's client).
            if (route.Contains("/{0}", StringComparison.Ordinal) && value.Contains('\0')) value = value.Replace('\0', '\u0001');
            var url = string.Format(CultureInfo.InvariantCulture, route, Escape(value));
            using var request = new HttpRequestMessage(HttpMethod.Get, url);
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", LedgerHost.ReadKey);
            using var response = await _http.SendAsync(request);
            var text = await response.Content.ReadAsStringAsync();
            var what = $"seed {seed}, step {i}: GET {Truncate(url)} -> {(int)response.StatusCode} {Truncate(text)}";

            Assert.True((int)response.StatusCode < 500, what);
            if ((int)response.StatusCode >= 400)
            {
                Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
                var problem = JsonNode.Parse(text)!;
                Assert.StartsWith("urn:run-ledger:problem:", problem["type"]!.GetValue<string>());
                Assert.False(problem["retryable"]!.GetValue<bool>(), what);
            }
            if (value.Any(c => c == '\0' || (char.IsControl(c) && c is not '\t')))
            {
                // A control character never reaches a query: the boundary refuses it by name.
                Assert.True(response.StatusCode == HttpStatusCode.UnprocessableEntity, what);
            }
        }
    }

    [Theory]
    [InlineData("/api/runs?page=2147483647")]
    [InlineData("/api/rejections?page=2147483647&pageSize=500")]
    [InlineData("/api/anomalies?page=0")]
    [InlineData("/api/runs?pageSize=-5")]
    [InlineData("/api/runs?page=abc")]
    [InlineData("/api/runs?board=%00")]
    [InlineData("/api/anomalies?runId=%00")]
    [InlineData("/api/runs?batch=a%1Bb")]
    public async Task overflowing_pages_and_control_characters_in_queries_are_422s_naming_the_parameter(string url)
    {
        var response = await _api.Send(HttpMethod.Get, url, LedgerHost.ReadKey);
        Assert.True(response.Status == HttpStatusCode.UnprocessableEntity, $"{url}: {response.Code} {response.Text}");
        var parameter = url.Split('?')[1].Split('&')[0].Split('=')[0];
        Assert.True(response.Json!["errors"]!.AsObject().ContainsKey(parameter), response.Text);
    }

    [Theory]
    [InlineData("/api/runs/a%1Bb/claim", "{\"worker\":\"w\"}")]
    [InlineData("/api/runs", "{\"runId\":\"r\",\"labels\":{\"k\\u0000\":\"v\"}}")]
    [InlineData("/api/runs", "{\"participant\":\"\\ud800\"}")]
    [InlineData("/api/boards", "{\"id\":\"b\",\"primaryScore\":\"a\\u0000\",\"direction\":\"max\"}")]
    [InlineData("/api/batches", "{\"id\":\"b\",\"runIds\":[\"a\\u0000\"]}")]
    public async Task nul_and_lone_surrogates_in_any_field_are_422s_and_nothing_is_stored(string url, string body)
    {
        var response = await Post(url, LedgerHost.AdminKey, body);
        Assert.True(response.Status is HttpStatusCode.UnprocessableEntity or HttpStatusCode.BadRequest, $"{url}: {response.Code} {response.Text}");
        Assert.Equal("application/problem+json", response.ContentType);
        Assert.NotEmpty(response.Json!["errors"]!.AsObject());
    }

    [Theory]
    [InlineData("DELETE", "/api/runs", "GET, POST")]
    [InlineData("PUT", "/api/boards", "GET, POST")]
    [InlineData("POST", "/health", "GET, HEAD")]
    [InlineData("PATCH", "/api/runs/some-run", "GET")]
    public async Task a_known_path_with_another_method_is_a_405_naming_the_allowed_ones(string method, string url, string allowed)
    {
        using var request = new HttpRequestMessage(new HttpMethod(method), url);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", LedgerHost.AdminKey);
        using var response = await _http.SendAsync(request);
        var problem = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        Assert.Equal(HttpStatusCode.MethodNotAllowed, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(ProblemCodes.MethodNotAllowed, problem["code"]!.GetValue<string>());
        Assert.Equal(allowed, string.Join(", ", response.Content.Headers.Allow.Count > 0 ? response.Content.Headers.Allow : response.Headers.GetValues("Allow")));
        Assert.Equal(allowed.Split(", "), problem["allowed"]!.AsArray().Select(a => a!.GetValue<string>()));
    }

    [Theory]
    [InlineData("/api/runs/x/y/z")]
    [InlineData("/api/.env")]
    [InlineData("/health/x.php")]
    [InlineData("/openapi/nothing")]
    public async Task unknown_api_paths_file_like_ones_included_are_404_problems(string url)
    {
        var response = await _api.Send(HttpMethod.Get, url, null);
        Assert.Equal(HttpStatusCode.NotFound, response.Status);
        Assert.Equal("application/problem+json", response.ContentType);
        Assert.Equal(ProblemCodes.NotFound, response.ProblemCode);
        Assert.False(response.Retryable);
    }

    /// <summary>PRODUCT.md: problem details are the API's answer; the console's paths answer HTML, error pages included.</summary>
    [Theory]
    [InlineData("/.env")]
    [InlineData("/x.php")]
    [InlineData("/favicon.ico")]
    [InlineData("/runs/x/y/z")]
    public async Task unknown_console_paths_are_404_html_pages(string url)
    {
        var response = await _api.Send(HttpMethod.Get, url, null);
        Assert.Equal(HttpStatusCode.NotFound, response.Status);
        Assert.Equal("text/html", response.ContentType);
        Assert.Contains("Not found", response.Text);
    }

    [Fact]
    public async Task a_form_body_is_a_415_and_registers_nothing()
    {
        var runId = NewRunId();
        using var request = new HttpRequestMessage(HttpMethod.Post, "/api/runs")
        {
            Content = new StringContent($"{{\"runId\":\"{runId}\"}}", Encoding.UTF8, "text/plain"),
        };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", LedgerHost.AdminKey);
        using var response = await _http.SendAsync(request);
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(HttpStatusCode.NotFound, (await _api.GetRun(runId)).Status);
    }

    // Every body here is ASCII (Json escapes the rest), so it reaches the ledger byte for byte.
    private Task<Response> Post(string url, string key, string body) => _api.Send(HttpMethod.Post, url, key, rawBody: body);

    /// <summary>A JSON string literal that escapes everything outside printable ASCII, lone surrogates included.</summary>
    private static string Json(string value)
    {
        var json = new StringBuilder("\"");
        foreach (var c in value)
        {
            if (c is '"' or '\\') json.Append('\\').Append(c);
            else if (c < 0x20 || c > 0x7e) json.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
            else json.Append(c);
        }
        return json.Append('"').ToString();
    }

    /// <summary>Percent-encodes UTF-16 code units as UTF-8 bytes, a lone surrogate as the bytes it would have (invalid UTF-8).</summary>
    private static string Escape(string value)
    {
        var escaped = new StringBuilder();
        for (var i = 0; i < value.Length; i++)
        {
            var c = value[i];
            if (char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or '~') { escaped.Append(c); continue; }
            int codePoint = c;
            if (char.IsHighSurrogate(c) && i + 1 < value.Length && char.IsLowSurrogate(value[i + 1])) codePoint = char.ConvertToUtf32(c, value[++i]);
            foreach (var b in Utf8Bytes(codePoint)) escaped.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
        }
        return escaped.ToString();
    }

    private static IEnumerable<byte> Utf8Bytes(int cp) => cp switch
    {
        < 0x80 => [(byte)cp],
        < 0x800 => [(byte)(0xC0 | (cp >> 6)), (byte)(0x80 | (cp & 0x3F))],
        < 0x10000 => [(byte)(0xE0 | (cp >> 12)), (byte)(0x80 | ((cp >> 6) & 0x3F)), (byte)(0x80 | (cp & 0x3F))],
        _ => [(byte)(0xF0 | (cp >> 18)), (byte)(0x80 | ((cp >> 12) & 0x3F)), (byte)(0x80 | ((cp >> 6) & 0x3F)), (byte)(0x80 | (cp & 0x3F))],
    };

    private static string Describe(string value) =>
        value.Length > 80 ? $"({value.Length} chars) {Json(value[..40])}..." : Json(value);

    private static string Truncate(string text) => text.Length > 300 ? text[..300] + "..." : text;

    /// <summary>An independent statement of what cannot be stored, so the test does not just call the code under test.</summary>
    private static class InputTextModel
    {
        public static bool Unstorable(string value)
        {
            if (value.Contains('\0')) return true;
            for (var i = 0; i < value.Length; i++)
            {
                if (char.IsSurrogatePair(value, i)) { i++; continue; }
                if (char.IsSurrogate(value[i])) return true;
            }
            return false;
        }
    }
}
