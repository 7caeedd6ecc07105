using System.Text.Json.Nodes;
using System.Text.Json.Serialization.Metadata;
using Ledger.Contract;
using Ledger.Infrastructure;
using Ledger.Runs;
using Microsoft.AspNetCore.OpenApi;
using Microsoft.OpenApi;

namespace Ledger.OpenApi;

/// <summary>
/// The API description served at <c>/openapi/v1.json</c>, made truthful: request bodies the endpoints
/// read themselves, responses as <see cref="LedgerJson.Options"/> writes them (a member that can be null
/// is left out, so it is never required), every refusal from <see cref="ProblemCatalogue"/> as
/// <c>application/problem+json</c>, and the bearer schemes each operation accepts.
/// docs/openapi/v1.json is this document, committed; a test keeps the two equal.
/// </summary>
public static class ApiDescription
{
    public const string DocumentName = "v1";
    public const string ProblemMediaType = "application/problem+json";
    public const string ProblemSchema = "Problem";
    public const string ProblemCodesExtension = "x-problem-codes";

    public static IServiceCollection AddLedgerOpenApi(this IServiceCollection services) =>
        services.AddOpenApi(DocumentName, o =>
        {
            o.AddSchemaTransformer(OptionalWhenNullable);
            o.AddOperationTransformer(DescribeOperation);
            o.AddDocumentTransformer(DescribeDocument);
        });

    /// <summary>The scheme name of each credential in <c>components.securitySchemes</c>.</summary>
    public static string SchemeName(Credential credential) => credential switch
    {
        Credential.AdminKey => "adminKey",
        Credential.WorkerKey => "workerKey",
        Credential.ReadKey => "readKey",
        Credential.LeaseToken => "leaseToken",
        _ => throw new ArgumentOutOfRangeException(nameof(credential)),
    };

    private static readonly Dictionary<Credential, string> SchemeDescriptions = new()
    {
        [Credential.AdminKey] = "The orchestrator's key (`Ledger:AdminKey`): `Authorization: Bearer <key>`. Registers, cancels, reclassifies, defines boards and batches, and reads.",
        [Credential.WorkerKey] = "A worker key (`Ledger:WorkerKeys`): claims runs and records observations.",
        [Credential.ReadKey] = "A read key (`Ledger:ReadKeys`): reads runs, boards, batches and forensics.",
        [Credential.LeaseToken] = "The lease token a claim returned (`leaseToken`): every worker event of that run carries it. It is valid for that run only, until the lease expires or the run is claimed again.",
    };

    // ---- schemas: nothing that can be left out is required ----

    private static Task OptionalWhenNullable(OpenApiSchema schema, OpenApiSchemaTransformerContext context, CancellationToken _)
    {
        var info = context.JsonTypeInfo;
        if (info.Kind == JsonTypeInfoKind.Object && schema.Required is { Count: > 0 } required)
        {
            foreach (var property in info.Properties)
            {
                // LedgerJson.Options writes no null member: a member that can be null may be absent.
                if (CanBeNull(property)) required.Remove(property.Name);
            }
        }
        if (info.Type == typeof(Problem) && schema.Properties is { } members)
        {
            // The catalogue is the one definition of the codes: the schema lists them.
            if (members.TryGetValue("code", out var code) && code is OpenApiSchema codeSchema)
            {
                codeSchema.Enum = ProblemCatalogue.All.Select(p => (JsonNode)JsonValue.Create(p.Code)!).ToList();
            }
            if (members.TryGetValue("type", out var type) && type is OpenApiSchema typeSchema)
            {
                typeSchema.Description = $"`{ProblemCodes.TypePrefix}<code>`: stable, never changes meaning.";
                typeSchema.Pattern = "^" + System.Text.RegularExpressions.Regex.Escape(ProblemCodes.TypePrefix) + "[a-z-]+$";
            }
            if (members.TryGetValue("status", out var status) && status is OpenApiSchema statusSchema)
            {
                statusSchema.Description = "The HTTP status code (RFC 9457); the run's status is `runStatus`.";
            }
        }
        if (info.Kind == JsonTypeInfoKind.Object && schema.Properties is { } anomalyMembers
            && typeof(IAnomaly).IsAssignableFrom(info.Type)
            && anomalyMembers.TryGetValue("kind", out var kind) && kind is OpenApiSchema kindSchema)
        {
            kindSchema.Enum = AnomalyKinds.All.Select(k => (JsonNode)JsonValue.Create(k)!).ToList();
        }
        return Task.CompletedTask;
    }

    private static bool CanBeNull(JsonPropertyInfo property) =>
        Nullable.GetUnderlyingType(property.PropertyType) is not null
        || (!property.PropertyType.IsValueType && (property.IsGetNullable || !property.IsRequired && IsAnnotatedNullable(property)));

    private static bool IsAnnotatedNullable(JsonPropertyInfo property)
    {
        var context = new System.Reflection.NullabilityInfoContext();
        return property.AttributeProvider switch
        {
            System.Reflection.PropertyInfo p => context.Create(p).ReadState == System.Reflection.NullabilityState.Nullable,
            System.Reflection.FieldInfo f => context.Create(f).ReadState == System.Reflection.NullabilityState.Nullable,
            _ => false,
        };
    }

    // ---- operations ----

    private static async Task DescribeOperation(OpenApiOperation operation, OpenApiOperationTransformerContext context, CancellationToken ct)
    {
        var metadata = context.Description.ActionDescriptor.EndpointMetadata;
        // The endpoint's Name (RegisterRun, ClaimRun, ...) is its operationId: what generated clients call the method.
        var name = metadata.OfType<Wolverine.Http.WolverineHttpMethodAttribute>().FirstOrDefault()?.Name;
        if (name is not null)
        {
            operation.OperationId = name;
            if (operation.Description == name || operation.Description?.Contains('_') == true && !operation.Description.Contains(' '))
            {
                operation.Description = null;
            }
        }

        foreach (var parameter in operation.Parameters?.OfType<OpenApiParameter>() ?? [])
        {
            DescribeParameter(parameter, name);
        }

        var body = metadata.OfType<JsonBodyAttribute>().FirstOrDefault();
        var accepts = metadata.OfType<AcceptsAttribute>().FirstOrDefault()?.Credentials ?? [];
        var refuses = metadata.OfType<RefusesAttribute>().FirstOrDefault();
        var document = context.Document!;

        if (body is not null)
        {
            operation.RequestBody = new OpenApiRequestBody
            {
                Required = !body.Optional,
                Description = body.Optional ? "Optional: an empty body is read as `{}`." : null,
                Content = new Dictionary<string, OpenApiMediaType>
                {
                    ["application/json"] = new() { Schema = await RequestSchemas.For(body.Type, context, ct) },
                },
            };
        }

        if (accepts.Count > 0)
        {
            operation.Security = accepts.Select(c => new OpenApiSecurityRequirement
            {
                [new OpenApiSecuritySchemeReference(SchemeName(c), document)] = [],
            }).ToList();
        }

        // Every refusal this operation can give, grouped by status; the catalogue says status and meaning.
        var codes = new List<string>();
        if (accepts.Count > 0)
        {
            codes.AddRange([ProblemCodes.MissingCredentials, ProblemCodes.InvalidCredentials]);
            // Every /api path: an address that sent too many wrong keys waits (WrongKeyThrottle).
            if (context.Description.RelativePath?.StartsWith("api/", StringComparison.OrdinalIgnoreCase) == true) codes.Add(ProblemCodes.TooManyWrongKeys);
            if (accepts.Contains(Credential.LeaseToken)) codes.Add(ProblemCodes.ForeignLease);
            var keys = accepts.Where(c => c != Credential.LeaseToken).ToList();
            // A key of a role the operation does not take; a lease-token operation refuses keys the same way.
            if (keys.Count is > 0 and < 3) codes.Add(ProblemCodes.Forbidden);
        }
        if (body is not null)
        {
            codes.AddRange([ProblemCodes.MalformedJson, ProblemCodes.PayloadTooLarge, ProblemCodes.UnsupportedMediaType]);
        }
        codes.Add(ProblemCodes.InvalidPayload); // any query or path value the ledger cannot store, besides the body
        codes.AddRange(refuses?.Codes ?? []);
        if (refuses?.Contended == true) codes.AddRange([ProblemCodes.Contention, ProblemCodes.Overloaded]);
        codes.AddRange([ProblemCodes.DatabaseUnavailable, ProblemCodes.Internal]);

        operation.Responses ??= new OpenApiResponses();
        foreach (var (status, response) in operation.Responses.ToList())
        {
            // Refusals are redone from the catalogue; a success "of IResult" is the framework's guess, not an answer.
            var isIResult = response.Content?.Values.Any(c => c.Schema is OpenApiSchemaReference { Reference.Id: "IResult" }) == true;
            if (status[0] is '4' or '5' || isIResult) operation.Responses.Remove(status);
        }
        foreach (var group in codes.Distinct().Select(ProblemCatalogue.Get).GroupBy(p => p.Status).OrderBy(g => g.Key))
        {
            operation.Responses[group.Key.ToString(System.Globalization.CultureInfo.InvariantCulture)] = Refusal(group.ToList(), document);
        }
    }

    /// <summary>Query and path parameters, with the values and bounds the endpoints enforce.</summary>
    private static void DescribeParameter(OpenApiParameter parameter, string? operationId)
    {
        if (parameter.Schema is not OpenApiSchema schema) return;
        switch (parameter.Name)
        {
            case "id":
                parameter.Description = operationId switch
                {
                    "GetBoard" or "GetLeaderboard" => "The board's id.",
                    "GetBatch" => "The batch's id.",
                    _ => "The run's id.",
                };
                break;
            case "page":
                schema.Minimum = "1";
                parameter.Description = "1-based page number.";
                break;
            case "pageSize":
                schema.Minimum = "1";
                schema.Maximum = Paging.MaxPageSize.ToString(System.Globalization.CultureInfo.InvariantCulture);
                schema.Default = JsonValue.Create(Paging.DefaultPageSize);
                parameter.Description = "Rows per page.";
                break;
            case "status":
                schema.Enum = RunStatusRules.WireNames.Select(s => (JsonNode)JsonValue.Create(s)!).ToList();
                parameter.Description = "Only runs with this status.";
                break;
            case "anomaly" or "kind":
                schema.Enum = AnomalyKinds.All.Select(k => (JsonNode)JsonValue.Create(k)!).ToList();
                parameter.Description = "Only anomalies of this kind.";
                break;
            case "after":
                schema.Minimum = "0";
                parameter.Description = "Events after this version; the `next` of the previous page (0 or left out: from the start).";
                break;
            case "limit":
                schema.Minimum = "1";
                schema.Maximum = GetRunHistoryEndpoint.MaxLimit.ToString(System.Globalization.CultureInfo.InvariantCulture);
                schema.Default = JsonValue.Create(GetRunHistoryEndpoint.DefaultLimit);
                parameter.Description = "Events per page.";
                break;
            case "reason":
                schema.Enum = ProblemCatalogue.All.Select(p => (JsonNode)JsonValue.Create(p.Code)!).ToList();
                parameter.Description = "Only refusals of this problem code.";
                break;
            case "runId":
                parameter.Description = "Only those of this run.";
                break;
            case "board" or "participant" or "batch":
                parameter.Description = $"Only runs of this {parameter.Name}.";
                break;
            case "from" or "to":
                schema.Format = "date-time";
                parameter.Description = operationId == "GetKpiSeries"
                    ? $"The window's {(parameter.Name == "from" ? "start" : "end")} (ISO 8601; UTC when no offset is given)."
                    : $"Only runs registered {(parameter.Name == "from" ? "at or after" : "before")} this time (ISO 8601; UTC when no offset is given).";
                break;
            case "label":
                schema.Pattern = "^[^:]+:.+$";
                parameter.Description = "Only runs with this label, as `key:value` (the value is normalized like a registration's).";
                break;
            case "stuckFor":
                schema.Type = JsonSchemaType.Integer;
                schema.Format = "int64";
                schema.Minimum = "1";
                schema.Maximum = RunFilter.MaxStuckForSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
                parameter.Description = "Only runs claimed or running with no heartbeat for at least this many seconds, not yet lost.";
                break;
            case "bucket":
                schema.Enum = [JsonValue.Create("hour")!, JsonValue.Create("day")!];
                schema.Default = JsonValue.Create("day");
                parameter.Description = "One point per hour or per day.";
                break;
            case "since" or "at":
                schema.Format = "date-time";
                parameter.Description = parameter.Name == "at"
                    ? "As it stood at this time (ISO 8601; UTC when no offset is given)."
                    : "Only what happened at or after this time (ISO 8601; UTC when no offset is given).";
                break;
            case "version":
                schema.Minimum = "1";
                parameter.Description = "After the stream's N-th event (versions start at 1).";
                break;
        }
    }

    private static OpenApiResponse Refusal(IReadOnlyList<ProblemType> types, OpenApiDocument document)
    {
        var response = new OpenApiResponse
        {
            Description = string.Join("\n", types.Select(t => $"- `{t.Code}` ({(t.Retryable ? "retryable" : "not retryable")}): {t.Meaning}")),
            Content = new Dictionary<string, OpenApiMediaType>
            {
                [ProblemMediaType] = new() { Schema = new OpenApiSchemaReference(ProblemSchema, document) },
            },
            // The same list, for machines: the codes this answer can carry (the tests hold every refusal to it).
            Extensions = new Dictionary<string, IOpenApiExtension>
            {
                [ProblemCodesExtension] = new JsonNodeExtension(new JsonArray(types.Select(t => (JsonNode)JsonValue.Create(t.Code)!).ToArray())),
            },
        };
        if (types.Any(t => t.Status is 503 or 429))
        {
            response.Headers = new Dictionary<string, IOpenApiHeader>
            {
                ["Retry-After"] = new OpenApiHeaderReference("Retry-After", document),
            };
        }
        return response;
    }

    // ---- the document ----

    /// <summary>
    /// <c>GET /health</c> is a health-check endpoint, which the framework does not describe; workers and
    /// supervisors poll it, so the description names it (as <see cref="HealthResponse"/> writes it).
    /// </summary>
    private static void DescribeHealth(OpenApiDocument document)
    {
        const string schemaName = "Health";
        var status = new OpenApiSchema { Type = JsonSchemaType.String, Enum = [JsonValue.Create("healthy")!, JsonValue.Create("degraded")!, JsonValue.Create("unhealthy")!] };
        // (a 503 answers the shared Problem schema; its extra member `checks` has this same shape)
        document.AddComponent(schemaName, new OpenApiSchema
        {
            Type = JsonSchemaType.Object,
            Required = new HashSet<string> { "status", "checks" },
            Properties = new Dictionary<string, IOpenApiSchema>
            {
                ["status"] = status,
                ["checks"] = new OpenApiSchema
                {
                    Type = JsonSchemaType.Object,
                    Description = "Each check by name (`database`: the event store answers).",
                    AdditionalProperties = new OpenApiSchema
                    {
                        Type = JsonSchemaType.Object,
                        Required = new HashSet<string> { "status" },
                        Properties = new Dictionary<string, IOpenApiSchema>
                        {
                            ["status"] = status,
                            ["description"] = new OpenApiSchema { Type = JsonSchemaType.String },
                        },
                    },
                },
            },
        });
        OpenApiResponse Answer(string description) => new()
        {
            Description = description,
            Content = new Dictionary<string, OpenApiMediaType>
            {
                ["application/json"] = new() { Schema = new OpenApiSchemaReference(schemaName, document) },
            },
        };
        document.Paths ??= new OpenApiPaths();
        document.Paths["/health"] = new OpenApiPathItem
        {
            Operations = new Dictionary<HttpMethod, OpenApiOperation>
            {
                [HttpMethod.Get] = new()
                {
                    OperationId = "GetHealth",
                    Tags = new HashSet<OpenApiTagReference> { new("Health", document) },
                    Summary = "Ready: the ledger can take events (no credentials)",
                    Security = [],
                    Responses = new OpenApiResponses
                    {
                        ["200"] = Answer("Ready: the event store answers."),
                        // Not ready is a refusal like any other, with the checks beside the problem's members.
                        ["503"] = Refusal([ProblemCatalogue.Get(ProblemCodes.DatabaseUnavailable)], document),
                    },
                },
            },
        };
    }

    private static async Task DescribeDocument(OpenApiDocument document, OpenApiDocumentTransformerContext context, CancellationToken ct)
    {
        // One relative server: the document describes whichever ledger serves it.
        document.Servers = [new OpenApiServer { Url = "/", Description = "The ledger that serves this document." }];
        document.Info.Title = "Run Ledger";
        document.Info.Version = "v1";
        document.Info.Description =
            "The truth about runs handed to workers: every worker event appended to the run's stream, status derived from it.\n\n" +
            "Every refusal is `application/problem+json` (RFC 9457) with a stable `type` and `code`, `retryable`, and, once the caller " +
            "is authenticated for the run, the run's status in `runStatus`. Besides the answers listed per operation, any path that " +
            "is not part of the API answers 404 `not-found`, and a known path with another method answers 405 `method-not-allowed` " +
            "(with the `Allow` header and `allowed`). The full catalogue: docs/problems.md.";

        document.Components ??= new OpenApiComponents();
        document.Components.SecuritySchemes ??= new Dictionary<string, IOpenApiSecurityScheme>();
        foreach (var credential in Enum.GetValues<Credential>())
        {
            document.Components.SecuritySchemes[SchemeName(credential)] = new OpenApiSecurityScheme
            {
                Type = SecuritySchemeType.Http,
                Scheme = "bearer",
                Description = SchemeDescriptions[credential],
            };
        }
        document.Components.Headers ??= new Dictionary<string, IOpenApiHeader>();
        document.Components.Headers["Retry-After"] = new OpenApiHeader
        {
            Description = "Seconds to wait before resending the same request.",
            Schema = new OpenApiSchema { Type = JsonSchemaType.Integer, Minimum = "0" },
        };
        DescribeHealth(document);

        // A schema the framework made for the IResult endpoints return: never on the wire as such.
        document.Components.Schemas?.Remove("IResult");
        if (document.Components.Schemas?.ContainsKey("JsonElement") == true)
        {
            document.Components.Schemas["JsonElement"] = new OpenApiSchema { Description = "Any JSON value, as it was recorded." };
        }
        document.Tags = new HashSet<OpenApiTag>(
        [
            new() { Name = "Runs", Description = "Register, claim, report events, cancel, reclassify and read runs." },
            new() { Name = "Leaderboards", Description = "Boards and their rankings, from succeeded runs only." },
            new() { Name = "Batches", Description = "Fan-out jobs: the runs they expect, and which are missing." },
            new() { Name = "Forensics", Description = "Anomalies, KPIs, refused requests and time travel." },
            new() { Name = "Health", Description = "Readiness, for supervisors and load balancers." },
        ]);
        if (document.Components.Schemas?.ContainsKey(ProblemSchema) != true)
        {
            document.AddComponent(ProblemSchema, await context.GetOrCreateSchemaAsync(typeof(Problem), null, ct));
        }
    }
}
