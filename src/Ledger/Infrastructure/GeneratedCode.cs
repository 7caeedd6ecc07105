using Wolverine;

namespace Ledger.Infrastructure;

/// <summary>
/// The code Wolverine generates for the HTTP endpoints and message handlers, and the commands of
/// the JasperFx command line that build the host without starting it. See docs/architecture.md,
/// "Generated code".
/// </summary>
public static class GeneratedCode
{
    /// <summary>
    /// Where <c>codegen write</c> writes instead of the source tree (a directory; tests use it to
    /// regenerate into a scratch folder). Not an operator setting.
    /// </summary>
    public const string OutputSetting = "Ledger:GeneratedCode:OutputDirectory";

    /// <summary>A connection string the offline commands configure the store with; nothing ever connects to it.</summary>
    public const string OfflineConnectionString = "Host=offline.invalid;Port=5432;Database=ledger;Username=ledger";

    /// <summary>
    /// Commands of the JasperFx command line that need no database: the host is built but never
    /// started, so the connection string is not resolved and no private PostgreSQL is started.
    /// </summary>
    public static bool IsOfflineCommand(string[] args) =>
        args.Length > 0 && args[0].ToLowerInvariant() is "codegen" or "describe" or "help" or "?";

    /// <summary><c>codegen</c> needs no settings at all: it does not build the endpoints, so neither keys nor a database.</summary>
    public static bool IsCodegenCommand(string[] args) => args.Length > 0 && args[0].Equals("codegen", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// Where the codegen command writes: <see cref="OutputSetting"/> when set, else the project
    /// folder this build came from (src/Ledger/bin/... under <c>dotnet run</c>). A published build,
    /// far from its sources, refuses rather than write somewhere else.
    /// </summary>
    public static string OutputDirectory(IConfiguration configuration)
    {
        if (configuration[OutputSetting] is { Length: > 0 } configured) return Path.GetFullPath(configured);
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Ledger.csproj"))) return Path.Combine(dir.FullName, "Internal", "Generated");
        }
        throw new StartupFailureException(StartupFailure.Configuration,
            $"codegen writes into the source tree, and there is no Ledger.csproj above {AppContext.BaseDirectory}: run `dotnet run --project src/Ledger -- codegen write` in the repository.");
    }

    /// <summary>
    /// Before <c>codegen write</c>: removes the code written last time, so that the adapter of an
    /// endpoint that no longer exists does not stay behind (JasperFx only adds and overwrites).
    /// </summary>
    public static void ClearBeforeWrite(string[] args, string outputDirectory)
    {
        if (args.Length < 2 || !args[1].Equals("write", StringComparison.OrdinalIgnoreCase) || !Directory.Exists(outputDirectory)) return;
        foreach (var file in Directory.EnumerateFiles(outputDirectory, "*.cs", SearchOption.AllDirectories)) File.Delete(file);
    }
}
