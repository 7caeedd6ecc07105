namespace Ledger.Infrastructure;

/// <summary>
/// What the ledger assumes when the caller did not say: its appsettings and its environment.
/// </summary>
public static class StartupDefaults
{
    /// <summary>
    /// Set by the launch profile (Properties/launchSettings.json) so that <c>dotnet run</c> is
    /// Development by default. Unlike setting ASPNETCORE_ENVIRONMENT there, it never overrides an
    /// environment the caller set (ASPNETCORE_ENVIRONMENT, DOTNET_ENVIRONMENT or --environment).
    /// </summary>
    public const string DefaultEnvironmentVariable = "LEDGER_DEFAULT_ENVIRONMENT";

    public static WebApplicationOptions Options(string[] args)
    {
        // The ledger runs in the caller's working directory (so that `export --out FILE` lands
        // where the caller is), but reads its appsettings from its own folder when that
        // directory has none, e.g. `dotnet run --project src/Ledger` from the repository root.
        var explicitRoot = args.Any(a => a.StartsWith("--contentRoot", StringComparison.OrdinalIgnoreCase))
                           || IsSet("ASPNETCORE_CONTENTROOT") || IsSet("DOTNET_CONTENTROOT");
        var contentRoot = !explicitRoot
                          && !File.Exists(Path.Combine(Directory.GetCurrentDirectory(), "appsettings.json"))
                          && File.Exists(Path.Combine(AppContext.BaseDirectory, "appsettings.json"))
            ? AppContext.BaseDirectory
            : null;

        var explicitEnvironment = args.Any(a => a.StartsWith("--environment", StringComparison.OrdinalIgnoreCase))
                                  || IsSet("ASPNETCORE_ENVIRONMENT") || IsSet("DOTNET_ENVIRONMENT");
        var environment = explicitEnvironment ? null : Environment.GetEnvironmentVariable(DefaultEnvironmentVariable) is { Length: > 0 } d ? d : null;

        return new WebApplicationOptions { Args = args, ContentRootPath = contentRoot, EnvironmentName = environment };
    }

    private static bool IsSet(string variable) => !string.IsNullOrEmpty(Environment.GetEnvironmentVariable(variable));
}
