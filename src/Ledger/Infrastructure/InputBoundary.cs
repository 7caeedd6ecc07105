using FluentValidation;
using System.Globalization;
using System.Text.Json;
using Ledger.Contract;

namespace Ledger.Infrastructure;

/// <summary>
/// What the ledger can store. PostgreSQL refuses NUL in text and jsonb (22P05, 22021), and a
/// lone UTF-16 surrogate cannot be encoded at all; identifiers must also be free of control
/// characters, so that they print, compare and index as what they look like.
/// </summary>
public static class InputText
{
    public const int MaxQueryValueLength = 2048;

    /// <summary>Why a free-text value cannot be stored, or null when it can.</summary>
    public static string? Unstorable(string value)
    {
        for (var i = 0; i < value.Length; i++)
        {
            var c = value[i];
            if (c == '\0') return "NUL characters (\\u0000) cannot be stored.";
            if (char.IsHighSurrogate(c))
            {
                if (i + 1 < value.Length && char.IsLowSurrogate(value[i + 1])) { i++; continue; }
                return "A lone UTF-16 surrogate is not a character and cannot be stored.";
            }
            if (char.IsLowSurrogate(c)) return "A lone UTF-16 surrogate is not a character and cannot be stored.";
        }
        return null;
    }

    /// <summary>Why a value cannot be an identifier (ids, names, label keys and values), or null when it can.</summary>
    public static string? NotIdentifier(string value) =>
        Unstorable(value) ?? (value.Any(char.IsControl) ? "Control characters are not allowed here." : null);

    public static bool IsIdentifier(string? value) => value is null || NotIdentifier(value) is null;

    /// <summary>The first string or property name in a JSON document that cannot be stored: (JSON path, why).</summary>
    public static (string Path, string Reason)? FindUnstorable(JsonElement element, string path = "$")
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.String:
                return Check(element, path);
            case JsonValueKind.Array:
                var index = 0;
                foreach (var item in element.EnumerateArray())
                {
                    if (FindUnstorable(item, $"{path}[{index++}]") is { } found) return found;
                }
                return null;
            case JsonValueKind.Object:
                foreach (var property in element.EnumerateObject())
                {
                    string name;
                    try
                    {
                        name = property.Name;
                    }
                    catch (InvalidOperationException)
                    {
                        return (path, "A member name holds a lone UTF-16 surrogate, which cannot be stored.");
                    }
                    if (Unstorable(name) is { } reason) return (path, $"A member name: {reason}");
                    if (FindUnstorable(property.Value, $"{path}.{name}") is { } found) return found;
                }
                return null;
            default:
                return null;
        }
    }

    private static (string Path, string Reason)? Check(JsonElement element, string path)
    {
        try
        {
            return Unstorable(element.GetString()!) is { } reason ? (path, reason) : null;
        }
        catch (InvalidOperationException)
        {
            return (path, "A lone UTF-16 surrogate is not a character and cannot be stored.");
        }
    }

    /// <summary>The error key of a JSON path: <c>$.labels.region</c> is <c>labels.region</c>, <c>$[2].eventId</c> is <c>[2].eventId</c>.</summary>
    public static string FieldName(string jsonPath) => jsonPath == "$" ? "$" : jsonPath.TrimStart('$').TrimStart('.');
}

/// <summary>
/// The query string and the path, checked before any endpoint sees them: every value must be
/// storable text without control characters and of bounded length, and the integer parameters
/// must be integers. A refusal is a 422 naming the parameter; nothing reaches PostgreSQL.
/// </summary>
public static class InputBoundary
{
    /// <summary>Query parameters that every endpoint reads as integers, with the widest value each takes.</summary>
    public static readonly IReadOnlyDictionary<string, long> IntegerParameters =
        new Dictionary<string, long>(StringComparer.OrdinalIgnoreCase)
        {
            ["page"] = int.MaxValue, ["pageSize"] = int.MaxValue, ["limit"] = int.MaxValue,
            ["version"] = long.MaxValue, ["after"] = long.MaxValue,
        };

    public static IApplicationBuilder UseInputBoundary(this IApplicationBuilder app) => app.Use(async (context, next) =>
    {
        if (Refusal(context) is { } problem)
        {
            // Credentials still come first: a caller without them is told only that.
            var refusal = context.Request.Path.StartsWithSegments("/api")
                ? await Unauthenticated(context) ?? problem
                : problem;
            await ErrorHandling.Answer(context, refusal);
            return;
        }
        await next(context);
    });

    private static async Task<Problem?> Unauthenticated(HttpContext context)
    {
        var token = Access.BearerToken(context);
        if (string.IsNullOrEmpty(token)) return Problem.Of(ProblemCodes.MissingCredentials, detail: "Send `Authorization: Bearer <key>`.");
        var services = context.RequestServices;
        if (services.GetRequiredService<Access>().IsKey(token)) return null;
        return await services.GetRequiredService<IRunLookup>().RunOfToken(Access.DigestHex(token), context.RequestAborted) is null
            ? Problem.Of(ProblemCodes.InvalidCredentials, detail: "The bearer key or lease token is not one this ledger issued.")
            : null;
    }

    public static Problem? Refusal(HttpContext context)
    {
        var errors = new Dictionary<string, string[]>();
        foreach (var (name, values) in context.Request.Query)
        {
            if (QueryValueProblem(name) is { } badName)
            {
                errors["query"] = [$"A parameter name: {badName}"];
                continue;
            }
            foreach (var value in values)
            {
                var reason = QueryValueProblem(value ?? "");
                // An empty value is an absent one (an HTML form sends its empty fields).
                if (reason is null && !string.IsNullOrEmpty(value) && IntegerParameters.TryGetValue(name, out var max) &&
                    !(long.TryParse(value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var number)
                      && number <= max && number >= -max))
                {
                    reason = $"An integer up to {max} is required.";
                }
                if (reason is not null) errors[name] = [reason];
            }
        }
        foreach (var (name, value) in context.Request.RouteValues)
        {
            if (value is string text && QueryValueProblem(text) is { } reason) errors[name] = [reason];
        }
        return errors.Count == 0 ? null : RequestBody.Invalid(errors);
    }

    private static string? QueryValueProblem(string value) =>
        value.Length > InputText.MaxQueryValueLength
            ? $"At most {InputText.MaxQueryValueLength} characters."
            : InputText.NotIdentifier(value);
}

public static class InputRules
{
    public const string NotIdentifierMessage = "Control characters are not allowed here.";

    /// <summary>A name or id a person reads and the ledger indexes: no control characters.</summary>
    public static IRuleBuilderOptions<T, string?> Printable<T>(this IRuleBuilder<T, string?> rule) =>
        rule.Must(InputText.IsIdentifier).WithMessage(NotIdentifierMessage);

    /// <summary>Counts and sizes stay within what every client's JSON numbers hold exactly (2^53 - 1).</summary>
    public const long MaxCount = 9_007_199_254_740_991;
}
