using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using Ledger.Contract;
using Ledger.Infrastructure;

namespace Ledger.OpenApi;

/// <summary>
/// The headers of <c>/docs</c> (Scalar's page over the API description): no framing, no sniffing,
/// no referrer, and a Content-Security-Policy that lets the page run its own scripts only. The page
/// has one inline script (the call that starts Scalar with its options), allowed by its SHA-256,
/// computed from the page as it is served, so that a change of Scalar's options or version keeps
/// the policy right; its other scripts are files of /docs itself. Scalar sets styles from script,
/// hence <c>'unsafe-inline'</c> for styles only.
/// </summary>
public static class DocsPageHeaders
{
    public const string Root = "/docs";

    /// <summary>Everything but the inline scripts' hashes.</summary>
    public const string Policy =
        "default-src 'none'; script-src 'self'{0}; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; " +
        "connect-src 'self'; worker-src 'self' blob:; manifest-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

    private static readonly Regex InlineScript = new(@"<script\b(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script>",
        RegexOptions.Singleline | RegexOptions.IgnoreCase | RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));

    /// <summary>The policy for a page: each inline script allowed by the base64 SHA-256 of its exact text.</summary>
    public static string PolicyFor(string html)
    {
        var hashes = InlineScript.Matches(html)
            .Select(m => $" 'sha256-{Convert.ToBase64String(SHA256.HashData(Encoding.UTF8.GetBytes(m.Groups[1].Value)))}'")
            .Distinct();
        return string.Format(System.Globalization.CultureInfo.InvariantCulture, Policy, string.Concat(hashes));
    }

    /// <summary>
    /// Scalar answers <c>/docs/{documentName}</c> with its page whatever the name, which then fails
    /// to load a description that does not exist: only the ledger's one document and Scalar's own
    /// files (names with an extension) are pages of /docs; anything else is 404.
    /// </summary>
    public static bool IsUnknownPage(PathString path)
    {
        if (!path.StartsWithSegments(Root, out var rest)) return false;
        var name = rest.Value?.Trim('/') ?? "";
        return name.Length > 0 && !name.Contains('/') && !Path.HasExtension(name) && name != ApiDescription.DocumentName;
    }

    public static IApplicationBuilder UseDocsPageHeaders(this IApplicationBuilder app) => app.Use(async (context, next) =>
    {
        if (!context.Request.Path.StartsWithSegments(Root))
        {
            await next(context);
            return;
        }
        var response = context.Response;
        response.OnStarting(() =>
        {
            response.Headers.XFrameOptions = "DENY";
            response.Headers.XContentTypeOptions = "nosniff";
            response.Headers["Referrer-Policy"] = "no-referrer";
            if (!response.Headers.ContainsKey("Content-Security-Policy")) response.Headers.ContentSecurityPolicy = PolicyFor("");
            return Task.CompletedTask;
        });

        if (IsUnknownPage(context.Request.Path))
        {
            await Problem.Of(ProblemCodes.NotFound, $"There is no page at {context.Request.Path}; the API reference is at {Root}.").ToResult().ExecuteAsync(context);
            return;
        }

        // The page itself (a path without a file extension) is held back until its scripts are hashed; files pass through.
        if (Path.HasExtension(context.Request.Path.Value))
        {
            await next(context);
            return;
        }
        var original = response.Body;
        using var page = new MemoryStream();
        response.Body = page;
        try
        {
            await next(context);
        }
        finally
        {
            response.Body = original;
        }
        if (response.ContentType?.StartsWith("text/html", StringComparison.OrdinalIgnoreCase) == true && !response.HasStarted)
        {
            response.Headers.ContentSecurityPolicy = PolicyFor(Encoding.UTF8.GetString(page.GetBuffer(), 0, (int)page.Length));
        }
        page.Position = 0;
        await page.CopyToAsync(original, context.RequestAborted);
    });
}
