using System.Buffers;
using System.Text.Json;
using FluentValidation.Results;
using Ledger.Contract;

namespace Ledger.Infrastructure;

/// <summary>
/// Reads request bodies ourselves so that every malformed, mistyped or oversized body gets a
/// stable refusal (never a 500) and a request's memory stays bounded by the configured maximum.
/// </summary>
public static class RequestBody
{
    public sealed record Read(JsonElement? Json, byte[] Raw, Problem? Problem);

    public static async Task<Read> ReadJsonAsync(HttpContext context, int maxBytes, bool allowEmpty = false)
    {
        var request = context.Request;
        if (!IsJson(request.ContentType) && request.ContentLength is not 0)
        {
            return new Read(null, [], Problem.Of(ProblemCodes.UnsupportedMediaType,
                detail: $"The body was sent as '{request.ContentType}'; send it as application/json."));
        }
        if (request.ContentLength is { } declared && declared > maxBytes)
        {
            return new Read(null, [], TooLarge(maxBytes));
        }

        var buffer = new ArrayBufferWriter<byte>(Math.Min(maxBytes + 1, 16 * 1024));
        var stream = request.Body;
        while (true)
        {
            var span = buffer.GetMemory(8 * 1024);
            var read = await stream.ReadAsync(span, context.RequestAborted);
            if (read == 0) break;
            buffer.Advance(read);
            if (buffer.WrittenCount > maxBytes)
            {
                return new Read(null, [], TooLarge(maxBytes));
            }
        }

        var raw = buffer.WrittenSpan.ToArray();
        if (raw.Length == 0 || raw.AsSpan().Trim(" \t\r\n"u8).Length == 0)
        {
            return allowEmpty
                ? new Read(null, raw, null)
                : new Read(null, raw, Problem.Of(ProblemCodes.MalformedJson,
                    "A JSON body is required."));
        }

        try
        {
            using var document = JsonDocument.Parse(raw, new JsonDocumentOptions { MaxDepth = 32 });
            if (InputText.FindUnstorable(document.RootElement) is { } unstorable)
            {
                return new Read(null, raw, Invalid(new Dictionary<string, string[]>
                {
                    [InputText.FieldName(unstorable.Path)] = [unstorable.Reason],
                }));
            }
            return new Read(document.RootElement.Clone(), raw, null);
        }
        catch (JsonException e)
        {
            return new Read(null, raw, Problem.Of(ProblemCodes.MalformedJson,
                e.Message));
        }
    }

    /// <summary>No content type (a bare client) or a JSON one; a form or text body is not a JSON body.</summary>
    private static bool IsJson(string? contentType)
    {
        if (string.IsNullOrWhiteSpace(contentType)) return true;
        if (!Microsoft.Net.Http.Headers.MediaTypeHeaderValue.TryParse(contentType, out var media)) return false;
        var type = media.MediaType.Value ?? "";
        return type.Equals("application/json", StringComparison.OrdinalIgnoreCase)
               || type.EndsWith("+json", StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>Binds a JSON element to a request record; a member of the wrong type is a 422.</summary>
    public static (T? Value, Problem? Problem) Bind<T>(JsonElement element, string pathPrefix = "") where T : class
    {
        try
        {
            var value = element.Deserialize<T>(LedgerJson.Options);
            return value is null
                ? (null, Invalid(new Dictionary<string, string[]> { [pathPrefix.TrimEnd('.') is { Length: > 0 } p ? p : "$"] = ["A JSON object is required."] }))
                : (value, null);
        }
        catch (JsonException e)
        {
            var path = (pathPrefix + (e.Path ?? "$").TrimStart('$').TrimStart('.')).TrimEnd('.');
            return (null, Invalid(new Dictionary<string, string[]>
            {
                [path.Length == 0 ? "$" : path] = ["The value has the wrong type or format."],
            }));
        }
    }

    public static Problem Invalid(IReadOnlyDictionary<string, string[]> errors, string? detail = null) =>
        Problem.Of(ProblemCodes.InvalidPayload,
            detail ?? "Fix the listed fields; resending the same payload will be refused again.") with { Errors = errors };

    public static Problem Invalid(IEnumerable<ValidationFailure> failures, string pathPrefix = "")
    {
        var list = failures as IReadOnlyCollection<ValidationFailure> ?? failures.ToList();
        return Invalid(list
            .GroupBy(f => pathPrefix + ToCamel(f.PropertyName))
            .ToDictionary(g => g.Key, g => g.Select(f => f.ErrorMessage).Distinct().ToArray()))
            with { Allowed = list.Select(f => f.CustomState).OfType<AllowedValues>().FirstOrDefault()?.Values };
    }

    // Only the member name is camel-cased: what follows it (a score name, an index) is the client's own text.
    private static string ToCamel(string propertyName) =>
        propertyName.Length == 0 ? propertyName : char.ToLowerInvariant(propertyName[0]) + propertyName[1..];

    /// <summary>Attached to a validation failure (<c>WithState</c>) whose field takes only these values: the problem's <c>allowed</c>.</summary>
    public sealed record AllowedValues(IReadOnlyList<string> Values);

    private static Problem TooLarge(int maxBytes) =>
        Problem.Of(ProblemCodes.PayloadTooLarge,
            $"The body exceeds the configured maximum of {maxBytes} bytes; split it into smaller requests.");
}
