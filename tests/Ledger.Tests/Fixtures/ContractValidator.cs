using System.Collections.Concurrent;
using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using Json.Schema;

namespace Ledger.Tests.Fixtures;

/// <summary>
/// Holds every answer the tests receive through <see cref="Scenarios.Send"/> to the API description:
/// the operation is found by method and route template, the status must be one it declares, and the
/// body must match the schema it declares for that status and content type. Drift fails the suite.
/// The document is read once per test run from the first host that asks (it is the same for every host).
/// </summary>
public static class ContractValidator
{
    private static readonly Uri DocumentUri = new("https://run-ledger.test/openapi/v1.json");
    private static readonly SemaphoreSlim Loading = new(1, 1);
    private static Contract? _contract;
    private static int _validated;
    private static readonly ConcurrentDictionary<string, int> Seen = new();
    // JsonSchema.Net's schema registry is not safe for concurrent use (json-everything issues #503,
    // #999): parallel checks (tests sending many requests at once, classes running in parallel)
    // corrupted it, and every later $ref failed to resolve. One check at a time.
    private static readonly object Evaluating = new();

    /// <summary>How many answers were checked against the description in this test run.</summary>
    public static int Validated => Volatile.Read(ref _validated);

    static ContractValidator()
    {
        // Where the suite's count goes, for whoever wants it (CI logs, the contract report).
        var statsFile = Environment.GetEnvironmentVariable("LEDGER_CONTRACT_STATS");
        if (!string.IsNullOrEmpty(statsFile))
        {
            AppDomain.CurrentDomain.ProcessExit += (_, _) => File.WriteAllText(statsFile,
                $"{Validated} responses validated against the API description\n"
                + string.Concat(Seen.OrderBy(s => s.Key, StringComparer.Ordinal).Select(s => $"{s.Value,7}  {s.Key}\n")));
        }
    }

    public static async Task<JsonDocument> Document(HttpClient http)
    {
        return (await Load(http)).Document;
    }

    /// <summary>Asserts that this answer is one the description declares for the request, with a body of the declared schema.</summary>
    public static async Task Check(HttpClient http, HttpMethod method, string url, HttpStatusCode status, string? mediaType, string body)
    {
        if (method == HttpMethod.Head || method == HttpMethod.Options) return;
        var path = url.Split('?', 2)[0];
        if (!path.StartsWith("/api", StringComparison.Ordinal) && path != "/health") return; // what the description covers
        var contract = await Load(http);
        var code = (int)status;
        var where = $"{method} {url} answered {code} ({mediaType ?? "no content type"}): {Shorten(body)}";
        if (mediaType == "application/problem+json") CatalogueTitle(body, where);

        var route = contract.Routes.FirstOrDefault(r => r.Pattern.IsMatch(path));
        var operation = route is null ? null : route.Operations.GetValueOrDefault(method.Method.ToLowerInvariant());
        if (operation is null)
        {
            // Outside every operation: only the generic refusals, 404 for an unknown path and 405 for another method.
            var expected = route is null ? 404 : 405;
            Assert.True(code == expected, $"No operation of the description matches; expected {expected}. {where}");
            Assert.True(mediaType == "application/problem+json", $"A refusal must be application/problem+json. {where}");
            Evaluate(contract, "#/components/schemas/Problem", body, where);
            using var problem = JsonDocument.Parse(body);
            var generic = problem.RootElement.GetProperty("code").GetString();
            Assert.True(generic == (expected == 404 ? "not-found" : "method-not-allowed"), $"Unexpected code '{generic}'. {where}");
            Count($"(no operation) {code}");
            return;
        }

        var key = code.ToString(System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(operation.Value.GetProperty("responses").TryGetProperty(key, out var response),
            $"Status {code} is not declared for {route!.Template} {method.Method}. {where}");
        var operationId = operation.Value.TryGetProperty("operationId", out var id) ? id.GetString() : route!.Template;
        if (body.Length == 0 && !response.TryGetProperty("content", out _))
        {
            Count($"{operationId} {code}");
            return;
        }
        Assert.True(mediaType is not null && response.TryGetProperty("content", out var content) && content.TryGetProperty(mediaType, out _),
            $"Content type {mediaType} is not declared for {route!.Template} {method.Method} {code}. {where}");
        var pointer = "#/paths/" + Escape(route!.Template) + "/" + method.Method.ToLowerInvariant() + "/responses/" + key
                      + "/content/" + Escape(mediaType!) + "/schema";
        Evaluate(contract, pointer, body, where);
        if (response.TryGetProperty("x-problem-codes", out var codes))
        {
            // A refusal's code is one the description lists for this operation and status.
            using var problem = JsonDocument.Parse(body);
            var problemCode = problem.RootElement.GetProperty("code").GetString();
            Assert.True(codes.EnumerateArray().Any(c => c.GetString() == problemCode),
                $"Problem code '{problemCode}' is not listed for {route.Template} {method.Method} {code} ({codes}). {where}");
        }
        Count($"{operationId} {code}");
    }

    /// <summary>A refusal's title is its type's, as the problem catalogue holds it: never worded again at a call site.</summary>
    private static void CatalogueTitle(string body, string where)
    {
        using var problem = JsonDocument.Parse(body);
        var root = problem.RootElement;
        if (!root.TryGetProperty("code", out var code) || !root.TryGetProperty("title", out var title)) return; // the schema check names what is missing
        var type = Ledger.Contract.ProblemCatalogue.Contains(code.GetString()!) ? Ledger.Contract.ProblemCatalogue.Get(code.GetString()!) : null;
        Assert.True(type is not null, $"Problem code '{code}' is not in the catalogue. {where}");
        Assert.True(type.Title == title.GetString(), $"The title of '{type.Code}' is not the catalogue's \"{type.Title}\". {where}");
    }

    private static void Count(string what)
    {
        Interlocked.Increment(ref _validated);
        Seen.AddOrUpdate(what, 1, (_, n) => n + 1);
    }

    private static void Evaluate(Contract contract, string pointer, string body, string where)
    {
        JsonDocument instance;
        try
        {
            instance = JsonDocument.Parse(body);
        }
        catch (JsonException e)
        {
            Assert.Fail($"The body is not JSON ({e.Message}). {where}");
            return;
        }
        using (instance)
        {
            EvaluationResults result;
            lock (Evaluating)
            {
                var schema = contract.Schemas.GetOrAdd(pointer, p => JsonSchema.FromText(
                    JsonSerializer.Serialize(new Dictionary<string, string> { ["$ref"] = DocumentUri + p }),
                    contract.BuildOptions));
                result = schema.Evaluate(instance.RootElement, new EvaluationOptions { OutputFormat = OutputFormat.List });
            }
            if (result.IsValid) return;
            var errors = (result.Details ?? [])
                .Where(d => d.Errors is { Count: > 0 })
                .SelectMany(d => d.Errors!.Select(e => $"{d.InstanceLocation} ({d.EvaluationPath}): {e.Key}: {e.Value}"))
                .Take(12);
            Assert.Fail($"The body does not match the declared schema {pointer}:\n  {string.Join("\n  ", errors)}\n{where}");
        }
    }

    private static string Escape(string segment) =>
        Uri.EscapeDataString(segment.Replace("~", "~0").Replace("/", "~1"));

    private static string Shorten(string text) => text.Length <= 600 ? text : text[..600] + "…";

    private static async Task<Contract> Load(HttpClient http)
    {
        if (_contract is { } loaded) return loaded;
        await Loading.WaitAsync();
        try
        {
            if (_contract is not null) return _contract;
            var text = await http.GetStringAsync("/openapi/v1.json");
            var document = JsonDocument.Parse(text);
            var registry = new SchemaRegistry();
            registry.Register(DocumentUri, new JsonElementBaseDocument(document.RootElement, DocumentUri));
            var routes = document.RootElement.GetProperty("paths").EnumerateObject()
                .Select(p => new Route(p.Name,
                    new Regex("^" + Regex.Replace(Regex.Escape(p.Name), @"\\\{[^}]+}", "[^/]+") + "/?$"),
                    p.Value.EnumerateObject().ToDictionary(m => m.Name, m => (JsonElement?)m.Value)))
                // Literal segments before parameters: /api/runs/{id}/events is not /api/runs/{id}.
                .OrderByDescending(r => r.Template.Count(c => c == '/'))
                .ThenBy(r => r.Template.Count(c => c == '{'))
                .ToList();
            _contract = new Contract(document, routes, new BuildOptions { SchemaRegistry = registry, Dialect = Dialect.Draft202012 });
            return _contract;
        }
        finally
        {
            Loading.Release();
        }
    }

    private sealed record Route(string Template, Regex Pattern, Dictionary<string, JsonElement?> Operations);

    private sealed record Contract(JsonDocument Document, IReadOnlyList<Route> Routes, BuildOptions BuildOptions)
    {
        public ConcurrentDictionary<string, JsonSchema> Schemas { get; } = new();
    }
}
