using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Ledger.Forensics;

/// <summary>
/// What of a request is secret, and how it is taken out of everything the ledger keeps or logs
/// about a refusal (the rejection log, its anomaly records, the log line): the one definition.
/// <list type="bullet">
/// <item><b>By field, in every body</b>: a member whose name says it holds a secret (<see cref="IsSecretName"/>:
/// <c>secret</c>, <c>key</c>, <c>claimId</c>, <c>authorization</c>, anything ending in token, secret,
/// password, ...), at any depth, has its value replaced by <see cref="Mark"/>, whatever its type.</item>
/// <item><b>By endpoint</b>: the bodies that carry a secret by design (<see cref="Endpoints"/>): the
/// subscription's <c>secret</c> (and its <c>url</c>, of which only the origin is kept: a hook URL is
/// often itself a capability), the claim's <c>claimId</c>.</item>
/// <item><b>A body that is not an object</b>, where the endpoint carries secrets (the object encoded twice, as
/// a string; a bare array), is withheld whole: no member name says where its secret is. Elsewhere, JSON
/// held in a string is redacted by field like the body around it, a few levels deep.</item>
/// <item><b>A body that does not parse</b> (malformed, or cut by a size limit) is redacted by field up
/// to where it stops parsing. What follows is withheld whole when the endpoint carries secrets or the
/// break came right after a secret's name: in a broken body a secret can take any shape, which no scan
/// reliably finds. Elsewhere it is kept after a lenient scan that redacts <c>name: value</c> and
/// <c>name=value</c> pairs of secret names (a subscription body sent to the wrong path).</item>
/// <item><b>Known values</b>: the request's own bearer credential and every value redacted above are
/// also replaced wherever else they occur, in the payload and in the refusal's detail.</item>
/// </list>
/// Redaction runs on the whole body before it is cut to <see cref="Infrastructure.LedgerOptions.RejectionPayloadBytes"/>,
/// and again (<see cref="RejectionScrub"/>) on rows kept before it existed or under an older <see cref="Version"/>.
/// </summary>
public static partial class Redaction
{
    /// <summary>What a secret value is replaced with.</summary>
    public const string Mark = "[redacted]";

    /// <summary>
    /// The revision of these rules a kept rejection was redacted under (<see cref="Rejection.Redaction"/>).
    /// Bump it when the rules change: rows of an older revision are scrubbed again at the next start.
    /// </summary>
    public const int Version = 2;

    /// <summary>A request body whose fields are secret by design, by method and route (<c>{x}</c>: any one segment).</summary>
    public sealed record Endpoint(string Method, string Route, IReadOnlyList<string> SecretFields, IReadOnlyList<string> UrlFields)
    {
        public bool Matches(string method, string path)
        {
            if (!string.Equals(Method, method, StringComparison.OrdinalIgnoreCase)) return false;
            var route = Route.Split('/');
            var segments = path.TrimEnd('/').Split('/');
            if (route.Length != segments.Length) return false;
            for (var i = 0; i < route.Length; i++)
            {
                if (route[i].StartsWith('{')) continue;
                if (!string.Equals(route[i], segments[i], StringComparison.OrdinalIgnoreCase)) return false;
            }
            return true;
        }
    }

    /// <summary>The endpoints whose bodies carry secrets, and which fields.</summary>
    public static readonly IReadOnlyList<Endpoint> Endpoints =
    [
        new("POST", "/api/subscriptions", ["secret"], ["url"]),
        new("POST", "/api/runs/{id}/claim", ["claimId"], []),
    ];

    // Names compared lower-case, without '_' and '-': leaseToken, lease_token and Lease-Token alike.
    private static readonly HashSet<string> SecretNames = new(StringComparer.Ordinal)
    {
        "key", "claimid", "authorization", "auth", "bearer", "cookie", "credential", "credentials",
    };

    private static readonly string[] SecretSuffixes = ["secret", "token", "password", "passwd", "passphrase", "apikey", "privatekey", "accesskey", "secretkey"];

    /// <summary>True when a member of this name holds a secret in any body.</summary>
    public static bool IsSecretName(string name)
    {
        var normalized = Normalize(name);
        return normalized.Length > 0 && (SecretNames.Contains(normalized) || SecretSuffixes.Any(s => normalized.EndsWith(s, StringComparison.Ordinal)));
    }

    private static string Normalize(string name) => name.Replace("_", "").Replace("-", "").ToLowerInvariant();

    /// <summary>What redaction made of a payload: the text to keep (cut to the size asked for), and whether anything was taken out.</summary>
    public sealed record Result(string Text, bool Truncated, bool Changed, IReadOnlyList<string> Secrets);

    /// <summary>
    /// The payload of a refused request as it may be kept, at most <paramref name="keepBytes"/> of it:
    /// redacted by field, by endpoint, and of the given credential (the request's bearer token) and
    /// every redacted value wherever they occur. The whole body is redacted before it is cut, so a cut
    /// never leaves half a secret.
    /// </summary>
    public static Result Payload(string method, string path, ReadOnlySpan<byte> body, int keepBytes, string? credential = null)
    {
        var endpoint = Endpoints.FirstOrDefault(e => e.Matches(method, path));
        var secrets = new List<string>();
        var (redacted, changed) = Redact(body, endpoint, keepBytes, secrets, depth: 0);

        if (credential is { Length: > 0 }) secrets.Add(credential);
        var (kept, replaced) = Known(redacted, secrets);
        var bytes = Encoding.UTF8.GetBytes(kept);
        var truncated = bytes.Length > keepBytes;
        return new Result(truncated ? Encoding.UTF8.GetString(bytes, 0, keepBytes) : kept, truncated, changed || replaced, secrets);
    }

    /// <summary>How deep JSON held in a string of JSON is followed (a body encoded twice, and again).</summary>
    private const int MaxEmbedding = 3;

    /// <summary>The body redacted by field and by endpoint, what does not parse withheld or scanned; the secrets found are added.</summary>
    private static (string Text, bool Changed) Redact(ReadOnlySpan<byte> body, Endpoint? endpoint, int keepBytes, List<string> secrets, int depth)
    {
        var trimmed = body.Trim(" \t\r\n"u8);
        if (endpoint is not null && !trimmed.IsEmpty && trimmed[0] != (byte)'{')
        {
            // A body that carries secrets by design is an object: anything else (the object encoded twice, as a
            // string; a bare array) holds them where no field name says so, and is not kept.
            return ($"{Mark} (a body of {body.Length} bytes that is not a JSON object is not kept at this endpoint)", true);
        }

        var ranges = new List<(int Start, int End, string Replacement)>();
        var (parsedTo, secretPending) = Walk(body, endpoint, ranges, secrets, depth);

        var text = new StringBuilder(Math.Min(body.Length, keepBytes) + 64);
        var at = 0;
        foreach (var (start, end, replacement) in ranges)
        {
            text.Append(Encoding.UTF8.GetString(body[at..start]));
            text.Append(replacement);
            at = end;
        }
        text.Append(Encoding.UTF8.GetString(body[at..parsedTo]));
        var changed = ranges.Count > 0;

        var rest = body[parsedTo..];
        if (rest.Trim(" \t\r\n"u8).IsEmpty)
        {
            text.Append(Encoding.UTF8.GetString(rest));
        }
        else if (endpoint is not null || secretPending)
        {
            // In a body that carries secrets, what does not parse is not kept: no scan finds a secret in every shape.
            text.Append($" {Mark} (the rest of the body, {rest.Length} bytes that do not parse, is not kept)");
            changed = true;
        }
        else
        {
            // Only what can be kept is scanned: a pair cut by the end of it is still found (its value runs to the end).
            var scanned = Scan(Encoding.UTF8.GetString(rest[..Math.Min(rest.Length, keepBytes + 1)]), secrets);
            changed |= scanned.Changed;
            text.Append(scanned.Text);
        }
        return (text.ToString(), changed);
    }

    /// <summary>Any other text kept or logged about a refusal (its detail): secret pairs found by scan, and the known values, taken out.</summary>
    public static (string? Text, bool Changed) Text(string? text, IReadOnlyList<string>? known = null)
    {
        if (string.IsNullOrEmpty(text)) return (text, false);
        var secrets = new List<string>(known ?? []);
        var scanned = Scan(text, secrets);
        var (replaced, changed) = Known(scanned.Text, secrets);
        return (replaced, scanned.Changed || changed);
    }

    /// <summary>
    /// Walks the JSON token by token, noting the byte range of every value to replace. Returns how far
    /// it parsed (the whole body when it is valid JSON) and whether it stopped right after a secret's name.
    /// </summary>
    private static (int ParsedTo, bool SecretPending) Walk(ReadOnlySpan<byte> body, Endpoint? endpoint,
        List<(int, int, string)> ranges, List<string> secrets, int depth)
    {
        var reader = new Utf8JsonReader(body, new JsonReaderOptions
        {
            AllowTrailingCommas = true,
            CommentHandling = JsonCommentHandling.Skip,
            MaxDepth = 256,
        });
        var parsedTo = 0;
        // What the value about to be read is: a secret, a URL of which only the origin is kept, or data.
        var pending = Pending.None;
        try
        {
            while (reader.Read())
            {
                var start = (int)reader.TokenStartIndex;
                switch (reader.TokenType)
                {
                    case JsonTokenType.PropertyName:
                        var name = reader.GetString()!;
                        pending = endpoint is not null && reader.CurrentDepth == 1 && endpoint.UrlFields.Contains(name, StringComparer.OrdinalIgnoreCase)
                            ? Pending.Url
                            : IsSecretName(name) || endpoint is not null && reader.CurrentDepth == 1 && endpoint.SecretFields.Contains(name, StringComparer.OrdinalIgnoreCase)
                                ? Pending.Secret
                                : Pending.None;
                        break;
                    case JsonTokenType.StartObject or JsonTokenType.StartArray when pending != Pending.None:
                        reader.Skip();
                        ranges.Add((start, (int)reader.BytesConsumed, Quoted(Mark)));
                        pending = Pending.None;
                        break;
                    case JsonTokenType.String when pending == Pending.Url:
                        var url = reader.GetString()!;
                        var origin = Origin(url);
                        if (origin != url)
                        {
                            ranges.Add((start, (int)reader.BytesConsumed, Quoted(origin)));
                            secrets.Add(url);
                        }
                        pending = Pending.None;
                        break;
                    case JsonTokenType.String when pending == Pending.Secret:
                        secrets.Add(reader.GetString()!);
                        ranges.Add((start, (int)reader.BytesConsumed, Quoted(Mark)));
                        pending = Pending.None;
                        break;
                    case JsonTokenType.String when Embedded(Decoded(ref reader)) is { } json:
                        // JSON held in a string (a body encoded twice, a config member) is redacted by the same
                        // rules of fields; too deep, it is not kept.
                        var inner = depth < MaxEmbedding
                            ? Redact(Encoding.UTF8.GetBytes(json), null, int.MaxValue - 1, secrets, depth + 1)
                            : (Text: Mark, Changed: true);
                        if (inner.Changed) ranges.Add((start, (int)reader.BytesConsumed, Quoted(inner.Text)));
                        pending = Pending.None;
                        break;
                    case JsonTokenType.Number or JsonTokenType.True or JsonTokenType.False or JsonTokenType.Null when pending != Pending.None:
                        ranges.Add((start, (int)reader.BytesConsumed, Quoted(Mark)));
                        pending = Pending.None;
                        break;
                    default:
                        pending = Pending.None;
                        break;
                }
                parsedTo = (int)reader.BytesConsumed;
            }
            parsedTo = body.Length;
        }
        catch (JsonException)
        {
            // Malformed or cut short: the rest is handled by the caller.
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException)
        {
            // A name or a secret that cannot be decoded (not UTF-8, a lone surrogate): what follows is not kept,
            // since the walk cannot say which of its members are secret.
            return (parsedTo, true);
        }
        return (parsedTo, pending != Pending.None);
    }

    private enum Pending { None, Secret, Url }

    /// <summary>The string value's text; null when it cannot be decoded (a lone surrogate escape): then it is data, not JSON.</summary>
    private static string? Decoded(ref Utf8JsonReader reader)
    {
        try
        {
            return reader.GetString();
        }
        catch (InvalidOperationException)
        {
            return null;
        }
    }

    /// <summary>The string's text when it looks like a JSON object or array, else null.</summary>
    private static string? Embedded(string? value)
    {
        if (value is null) return null;
        var text = value.AsSpan().Trim();
        return text.Length >= 2 && (text[0] == '{' && text[^1] == '}' || text[0] == '[' && text[^1] == ']') ? value : null;
    }

    private static string Quoted(string value) => JsonSerializer.Serialize(value);

    /// <summary>A URL's scheme, host and port, the rest marked; the mark alone for what is not an absolute URL.</summary>
    public static string Origin(string url)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.IsFile || string.IsNullOrEmpty(uri.Host)) return Mark;
        var origin = $"{uri.Scheme}://{uri.Authority.Split('@')[^1]}/";
        return uri.PathAndQuery == "/" && string.IsNullOrEmpty(uri.UserInfo) && string.IsNullOrEmpty(uri.Fragment) ? url : origin + Mark;
    }

    // name [quote] : or = [quote] value, the name tried only where a word starts (so the scan is linear): the value is a quoted
    // string (to its closing quote, or the end), an HTTP scheme and its credentials, or a run of non-separators.
    [GeneratedRegex("""(?<![A-Za-z0-9_\-])(?<name>[A-Za-z0-9_\-]+)["']?\s*[:=]\s*(?:(?<quote>["'])(?<value>(?:\\.|(?!\k<quote>).)*)(?:\k<quote>|$)|(?<value>(?:(?:Bearer|Basic|Digest)\s+)?[^\s,;&}\]"']+))""",
        RegexOptions.Singleline | RegexOptions.CultureInvariant, matchTimeoutMilliseconds: 1000)]
    private static partial Regex Pair();

    private sealed record Scanned(string Text, bool Changed);

    private static Scanned Scan(string text, List<string> secrets)
    {
        var changed = false;
        string replaced;
        try
        {
            replaced = Pair().Replace(text, match =>
            {
                if (!IsSecretName(match.Groups["name"].Value)) return match.Value;
                var value = match.Groups["value"];
                if (value.Length == 0) return match.Value;
                changed = true;
                secrets.Add(value.Value);
                return match.Value[..(value.Index - match.Index)] + Mark + match.Value[(value.Index - match.Index + value.Length)..];
            });
        }
        catch (RegexMatchTimeoutException)
        {
            // A text built to make the scan slow is not kept at all.
            return new Scanned($"{Mark} (not kept: it could not be scanned for secrets)", true);
        }
        return new Scanned(replaced, changed);
    }

    /// <summary>Every known secret value (six characters or more: shorter ones would mark ordinary words) taken out of the text.</summary>
    private static (string Text, bool Changed) Known(string text, IEnumerable<string> secrets)
    {
        var changed = false;
        foreach (var secret in secrets.Where(s => s.Length >= 6).Distinct(StringComparer.Ordinal).OrderByDescending(s => s.Length))
        {
            foreach (var form in new[] { secret, JsonSerializer.Serialize(secret)[1..^1] }.Distinct(StringComparer.Ordinal))
            {
                if (!text.Contains(form, StringComparison.Ordinal)) continue;
                text = text.Replace(form, Mark, StringComparison.Ordinal);
                changed = true;
            }
        }
        return (text, changed);
    }
}
