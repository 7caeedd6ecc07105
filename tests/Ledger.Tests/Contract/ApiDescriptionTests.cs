using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Ledger.Contract;
using Ledger.Infrastructure;
using Ledger.Runs;
using Ledger.Tests.Fixtures;

namespace Ledger.Tests.Contract;

/// <summary>
/// The API description (/openapi/v1.json) is what clients are generated from: it is committed
/// (docs/openapi/v1.json), it passes a real linter, it describes every operation, and /docs shows it
/// without asking any outside host.
/// </summary>
public sealed class ApiDescriptionTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    /// <summary>The one command that regenerates docs/openapi/v1.json from the code.</summary>
    public const string RegenerateCommand =
        "LEDGER_UPDATE_OPENAPI=1 dotnet test tests/Ledger.Tests --filter FullyQualifiedName~ApiDescriptionTests.the_served_description_is_the_committed_one";

    private readonly HttpClient _http = ledger.Host.Server.CreateClient();

    private async Task<string> Served() => await _http.GetStringAsync("/openapi/v1.json");

    [Fact]
    public async Task the_served_description_is_the_committed_one()
    {
        var served = await Served();
        var committedPath = Path.Combine(ContractTools.RepoRoot, ContractTools.CommittedDescription);
        if (Environment.GetEnvironmentVariable("LEDGER_UPDATE_OPENAPI") == "1")
        {
            Directory.CreateDirectory(Path.GetDirectoryName(committedPath)!);
            await File.WriteAllTextAsync(committedPath, served.ReplaceLineEndings("\n").TrimEnd() + "\n");
            return;
        }
        Assert.True(File.Exists(committedPath), $"{ContractTools.CommittedDescription} is missing; create it with: {RegenerateCommand}");
        var committed = JsonNode.Parse(await File.ReadAllTextAsync(committedPath));
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse(served), committed),
            $"The served description differs from {ContractTools.CommittedDescription}. If the change is intended, regenerate it with:\n  {RegenerateCommand}");
    }

    [Fact]
    public async Task the_description_passes_the_redocly_linter_with_no_error()
    {
        var file = Path.Combine(Path.GetTempPath(), $"ledger-openapi-{Guid.NewGuid():N}.json");
        await File.WriteAllTextAsync(file, await Served());
        try
        {
            var lint = await ContractTools.Npx("redocly", ["lint", file, "--format=stylish"]);
            Assert.True(lint.ExitCode == 0, $"redocly lint found errors:\n{lint.Output}");
            Assert.DoesNotMatch(new Regex(@"\b[1-9]\d* errors?\b"), lint.Output);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public async Task every_operation_describes_its_body_credentials_and_refusals()
    {
        var document = JsonNode.Parse(await Served())!;
        var operations = document["paths"]!.AsObject()
            .SelectMany(p => p.Value!.AsObject().Select(m => (Path: p.Key, Method: m.Key, Operation: m.Value!)))
            .ToList();
        Assert.Equal(29, operations.Count); // the 28 of /api (5 of them webhook subscriptions, 2 retention), and GET /health
        Assert.Empty(document["paths"]!["/health"]!["get"]!["security"]!.AsArray());
        var schemes = document["components"]!["securitySchemes"]!.AsObject();
        Assert.Equal(["adminKey", "leaseToken", "readKey", "workerKey"], schemes.Select(s => s.Key).Order());
        Assert.All(schemes, s => Assert.Equal("bearer", s.Value!["scheme"]!.GetValue<string>()));

        foreach (var (path, method, operation) in operations.Where(o => o.Path.StartsWith("/api/")))
        {
            var name = $"{method.ToUpperInvariant()} {path}";
            Assert.Matches("^[A-Z][A-Za-z]+$", operation["operationId"]!.GetValue<string>());
            Assert.True(operation["security"] is JsonArray { Count: > 0 }, $"{name} declares no credentials");
            if (method == "post" && path == "/api/subscriptions/{id}/resume")
            {
                // An action on the subscription alone: it reads no body, and says it takes none.
                Assert.Null(operation["requestBody"]);
            }
            else if (method == "post")
            {
                Assert.True(operation["requestBody"]?["content"]?["application/json"]?["schema"] is not null, $"{name} has no JSON body");
            }
            var responses = operation["responses"]!.AsObject();
            Assert.Contains(responses, r => r.Key.StartsWith('2'));
            foreach (var (status, response) in responses.Where(r => r.Key[0] is '4' or '5'))
            {
                var content = response!["content"]!.AsObject();
                Assert.Equal([ApiProblem], content.Select(c => c.Key));
                Assert.Equal("#/components/schemas/Problem", content[ApiProblem]!["schema"]!["$ref"]!.GetValue<string>());
                foreach (var code in Regex.Matches(response["description"]!.GetValue<string>(), "^- `([a-z-]+)`", RegexOptions.Multiline).Select(m => m.Groups[1].Value))
                {
                    Assert.Equal(int.Parse(status), ProblemCatalogue.Get(code).Status);
                }
                if (status == "503") Assert.NotNull(response["headers"]?["Retry-After"]);
            }
            foreach (var status in new[] { "401", "422", "500", "503" }) Assert.True(responses.ContainsKey(status), $"{name} does not list {status}");
        }

        // The problem schema lists every code of the catalogue, and requires only what every refusal carries.
        var problem = document["components"]!["schemas"]!["Problem"]!;
        Assert.Equal(ProblemCatalogue.All.Select(p => p.Code), problem["properties"]!["code"]!["enum"]!.AsArray().Select(c => c!.GetValue<string>()));
        Assert.Equal(["code", "retryable", "status", "title", "type"], problem["required"]!.AsArray().Select(r => r!.GetValue<string>()).Order());
    }

    private const string ApiProblem = "application/problem+json";

    [Fact]
    public async Task each_operation_accepts_exactly_the_keys_its_security_declares()
    {
        var document = JsonNode.Parse(await Served())!;
        var api = new Scenarios(ledger);
        var keys = new Dictionary<string, string>
        {
            ["adminKey"] = LedgerHost.AdminKey, ["workerKey"] = LedgerHost.WorkerKey, ["readKey"] = LedgerHost.ReadKey,
        };
        foreach (var (path, item) in document["paths"]!.AsObject().Where(p => p.Key.StartsWith("/api/")))
        {
            foreach (var (method, operation) in item!.AsObject())
            {
                var declared = operation!["security"]!.AsArray().SelectMany(r => r!.AsObject().Select(s => s.Key)).ToHashSet();
                var url = path.Replace("{id}", Scenarios.NewRunId("security"));
                foreach (var (scheme, key) in keys)
                {
                    var answer = await api.Send(new HttpMethod(method.ToUpperInvariant()), url, key, method == "post" ? new { } : null);
                    var refused = answer.Code is 401 or 403;
                    Assert.True(refused != declared.Contains(scheme),
                        $"{method.ToUpperInvariant()} {path} with the {scheme} answered {answer.Code} {answer.ProblemCode}, but its security declares {string.Join(", ", declared)}");
                }
            }
        }
    }

    [Fact]
    public async Task the_events_body_is_one_event_or_an_array_each_a_union_of_the_ten_types()
    {
        var document = JsonNode.Parse(await Served())!;
        var schemas = document["components"]!["schemas"]!;
        var body = document["paths"]!["/api/runs/{id}/events"]!["post"]!["requestBody"]!["content"]!["application/json"]!["schema"]!;
        var events = schemas[body["$ref"]!.GetValue<string>().Split('/')[^1]]!;
        var oneOf = events["oneOf"]!.AsArray();
        Assert.Equal("#/components/schemas/WorkerEvent", oneOf[0]!["$ref"]!.GetValue<string>());
        Assert.Equal("array", oneOf[1]!["type"]!.GetValue<string>());

        var union = schemas["WorkerEvent"]!;
        Assert.Equal("type", union["discriminator"]!["propertyName"]!.GetValue<string>());
        var mapping = union["discriminator"]!["mapping"]!.AsObject();
        Assert.Equal(WorkerEventTypes.All.Order(), mapping.Select(m => m.Key).Order());
        string[] Required(string type) => schemas[mapping[type]!.GetValue<string>().Split('/')[^1]]!["required"]!.AsArray()
            .Select(r => r!.GetValue<string>()).Order().ToArray();
        Assert.Equal(["eventId", "occurredAt", "stepId", "type"], Required(WorkerEventTypes.StepStarted));
        Assert.Equal(["eventId", "occurredAt", "stepId", "type"], Required(WorkerEventTypes.StepCompleted));
        Assert.Equal(["chunkId", "count", "eventId", "occurredAt", "type"], Required(WorkerEventTypes.ItemsCommitted));
        Assert.Equal(["errorClass", "eventId", "occurredAt", "type"], Required(WorkerEventTypes.RunFailed));
        Assert.Equal(["eventId", "occurredAt", "type"], Required(WorkerEventTypes.RunCompleted));
    }

    [Fact]
    public async Task the_response_check_fails_on_drift()
    {
        // What Scenarios.Send does for every answer: here with answers the description does not allow.
        async Task Check(HttpMethod method, string url, HttpStatusCode status, string? mediaType, string body) =>
            await ContractValidator.Check(_http, method, url, status, mediaType, body);
        var notFound = JsonSerializer.Serialize(Problem.Of(ProblemCodes.RunNotFound, runId: "r1"), LedgerJson.Options);

        await Check(HttpMethod.Get, "/api/runs/r1", HttpStatusCode.NotFound, ApiProblem, notFound);
        await Assert.ThrowsAnyAsync<Xunit.Sdk.XunitException>(() =>
            Check(HttpMethod.Get, "/api/runs/r1", HttpStatusCode.OK, "application/json", """{"runId":"r1"}"""));
        var otherCode = JsonSerializer.Serialize(Problem.Of(ProblemCodes.BoardNotFound), LedgerJson.Options);
        await Assert.ThrowsAnyAsync<Xunit.Sdk.XunitException>(() =>
            Check(HttpMethod.Get, "/api/runs/r1", HttpStatusCode.NotFound, ApiProblem, otherCode));
        await Assert.ThrowsAnyAsync<Xunit.Sdk.XunitException>(() =>
            Check(HttpMethod.Get, "/api/runs/r1", (HttpStatusCode)418, ApiProblem, notFound));
        await Assert.ThrowsAnyAsync<Xunit.Sdk.XunitException>(() =>
            Check(HttpMethod.Get, "/api/runs/r1", HttpStatusCode.NotFound, "application/json", notFound));
        await Assert.ThrowsAnyAsync<Xunit.Sdk.XunitException>(() =>
            Check(HttpMethod.Get, "/api/runs/r1", HttpStatusCode.NotFound, ApiProblem, """{"type":"urn:run-ledger:problem:run-not-found","status":404}"""));
        await Assert.ThrowsAnyAsync<Xunit.Sdk.XunitException>(() =>
            Check(HttpMethod.Post, "/api/runs/r1/claim", HttpStatusCode.OK, "application/json", """{"runId":"r1","leaseToken":"t","leaseExpiresAt":"soon"}x"""));
    }

    [Fact]
    public async Task the_docs_page_is_served_by_the_ledger_and_asks_no_outside_host()
    {
        using var redirect = await _http.GetAsync("/docs");
        Assert.True(redirect.StatusCode is HttpStatusCode.Found or HttpStatusCode.OK, $"/docs answered {redirect.StatusCode}");

        var html = await _http.GetStringAsync("/docs/");
        Assert.Contains("<div id=\"app\"></div>", html);
        // The page and its glue name no absolute URL: everything comes from the ledger itself.
        Assert.DoesNotMatch(new Regex("https?://", RegexOptions.IgnoreCase), html);
        Assert.Contains("\"withDefaultFonts\":false", html);
        Assert.Contains("\"telemetry\":false", html);
        Assert.DoesNotContain("proxyUrl", html);
        Assert.Contains("openapi/v1.json", html);

        var sources = Regex.Matches(html, "(?:src|href)=\"([^\"]+)\"").Select(m => m.Groups[1].Value).ToList();
        Assert.NotEmpty(sources);
        foreach (var source in sources)
        {
            Assert.False(Uri.TryCreate(source, UriKind.Absolute, out _), $"/docs loads {source} from elsewhere");
            using var asset = await _http.GetAsync("/docs/" + source);
            Assert.True(asset.StatusCode == HttpStatusCode.OK, $"/docs/{source} answered {asset.StatusCode}");
        }
        var glue = await _http.GetStringAsync("/docs/scalar.aspnetcore.js");
        Assert.DoesNotMatch(new Regex("https?://[a-z]", RegexOptions.IgnoreCase), glue.Replace("https?:\\/\\/", ""));
        // The bundle is served whole from the ledger (no CDN); fonts and telemetry are off in its configuration above.
        // The one document's page is there; a page for any other name is not (Scalar would serve one that cannot load).
        using var document = await _http.GetAsync("/docs/v1");
        Assert.Equal(HttpStatusCode.OK, document.StatusCode);
        foreach (var unknown in new[] { "/docs/anything", "/docs/v2", "/docs/admin/" })
        {
            using var missing = await _http.GetAsync(unknown);
            Assert.True(missing.StatusCode == HttpStatusCode.NotFound, $"{unknown} answered {missing.StatusCode}");
            Assert.Equal("application/problem+json", missing.Content.Headers.ContentType?.MediaType);
        }
        using var bundle = await _http.GetAsync("/docs/scalar.js");
        Assert.True(bundle.Content.Headers.ContentLength is > 1_000_000 || (await bundle.Content.ReadAsByteArrayAsync()).Length > 1_000_000);
    }
}
