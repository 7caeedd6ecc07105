namespace Ledger.Web;

/// <summary>Which requests are the API's (answered with problem details) and which the console's (answered with HTML).</summary>
public static class ConsolePaths
{
    private static readonly string[] ApiRoots = ["/api", "/health", "/metrics", "/openapi", "/docs"];

    public static bool IsApi(PathString path) => ApiRoots.Any(root => path.StartsWithSegments(root, StringComparison.OrdinalIgnoreCase));

    public static bool IsConsole(HttpContext context) => !IsApi(context.Request.Path);
}
