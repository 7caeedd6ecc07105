namespace Ledger.Infrastructure;

/// <summary>
/// The ledger runs in the caller's working directory (so that <c>export --out FILE</c> lands
/// where the caller is), but reads its appsettings from its own folder when that directory has
/// none, e.g. <c>dotnet run --project src/Ledger</c> from the repository root.
/// </summary>
public static class StartupPaths
{
    public static WebApplicationOptions Options(string[] args)
    {
        var options = new WebApplicationOptions { Args = args };
        var explicitRoot = args.Any(a => a.StartsWith("--contentRoot", StringComparison.OrdinalIgnoreCase))
                           || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("ASPNETCORE_CONTENTROOT"))
                           || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("DOTNET_CONTENTROOT"));
        if (!explicitRoot
            && !File.Exists(Path.Combine(Directory.GetCurrentDirectory(), "appsettings.json"))
            && File.Exists(Path.Combine(AppContext.BaseDirectory, "appsettings.json")))
        {
            return new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory };
        }
        return options;
    }
}
