using System.Reflection;
using JasperFx.CodeGeneration;
using Wolverine;
using Wolverine.Attributes;
using Wolverine.Http;
using Wolverine.Runtime.Handlers;

namespace Ledger.Infrastructure;

/// <summary>
/// Wolverine's adapters for the HTTP endpoints and message handlers are generated ahead of time
/// into src/Ledger/Internal/Generated (committed) and loaded statically in every environment: the
/// service never compiles C# at run time and does not ship the Roslyn compiler. Marten 9
/// generates no code. See docs/architecture.md, "Generated code".
/// </summary>
public static class GeneratedCode
{
    /// <summary>
    /// The one command that regenerates the committed code, from the repository root, without a
    /// database. It builds the ledger without the committed code (which may no longer compile
    /// after a handler changed) and replaces every file of the folder.
    /// </summary>
    public const string RegenerateCommand = "dotnet run --project src/Ledger -p:WithoutGeneratedCode=true -- codegen write";

    /// <summary>Where the committed code lives, relative to the repository root.</summary>
    public const string CommittedDirectory = "src/Ledger/Internal/Generated";

    /// <summary>
    /// Where <c>codegen write</c> writes instead of the source tree (a directory; the stale-code
    /// test regenerates into a scratch folder with it). Not an operator setting.
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
    /// Static type loading in every environment, from this assembly. <paramref name="outputDirectory"/>
    /// (the codegen command only) is where <c>codegen write</c> writes.
    /// </summary>
    public static void UseGeneratedCode(this WolverineOptions options, string? outputDirectory)
    {
        options.ApplicationAssembly = typeof(GeneratedCode).Assembly;
        options.CodeGeneration.TypeLoadMode = TypeLoadMode.Static;
        if (outputDirectory is not null) options.CodeGeneration.GeneratedCodeOutputPath = outputDirectory;
    }

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
            $"codegen writes into the source tree, and there is no Ledger.csproj above {AppContext.BaseDirectory}: run `{RegenerateCommand}` in the repository.");
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

    /// <summary>
    /// Fails when an endpoint of this assembly is missing from the generated endpoint registry:
    /// under static loading Wolverine maps only the endpoint types the registry lists, so a new
    /// endpoint class would otherwise answer 404 without a word. (A new method of a listed class,
    /// or a changed route, is found by Wolverine itself: its adapter type is missing.)
    /// </summary>
    public static void AssertEndpointsRegistered(Assembly assembly)
    {
        // No registry (a build without the generated code): Wolverine scans, and names every missing adapter itself.
        if (RegisteredEndpoints(assembly) is not { } registered) return;
        if (UnregisteredEndpoints(assembly.GetExportedTypes(), registered) is { Count: > 0 } missing)
        {
            throw new StaleGeneratedCodeException(Stale($"no adapters for the endpoints of {string.Join(", ", missing.Select(t => t.FullName))}"));
        }
    }

    /// <summary>The endpoint types the generated registry lists, found as Wolverine finds it; null when the build has none.</summary>
    internal static Type[]? RegisteredEndpoints(Assembly assembly) =>
        assembly.GetExportedTypes().FirstOrDefault(t => t is { IsClass: true, IsAbstract: false } && typeof(HttpEndpointRegistry).IsAssignableFrom(t))
            is { } registry
            ? ((HttpEndpointRegistry)Activator.CreateInstance(registry)!).EndpointTypes()
            : null;

    /// <summary>
    /// The types among <paramref name="types"/> that declare a Wolverine HTTP endpoint (Wolverine's
    /// own test: a public, non-generic type with a method carrying a route attribute, not
    /// [WolverineIgnore]) but are not in <paramref name="registered"/>.
    /// </summary>
    public static IReadOnlyList<Type> UnregisteredEndpoints(IEnumerable<Type> types, IEnumerable<Type> registered)
    {
        var known = registered.ToHashSet();
        return types
            .Where(t => t.IsPublic && t.GetGenericArguments().Length == 0 && !t.IsDefined(typeof(WolverineIgnoreAttribute), true))
            .Where(t => t.GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static)
                .Any(m => m.IsDefined(typeof(WolverineHttpMethodAttribute), true)))
            .Where(t => !known.Contains(t))
            .OrderBy(t => t.FullName, StringComparer.Ordinal)
            .ToList();
    }

    /// <summary>
    /// The one line a start that failed on stale generated code prints, or null when the error is
    /// something else. Wolverine names each missing adapter on a line of its own starting with '*'.
    /// </summary>
    public static string? Describe(Exception error)
    {
        switch (error)
        {
            case StaleGeneratedCodeException stale:
                return stale.Message;
            case MissingPreBuiltTypesException or ExpectedTypeMissingException:
                var missing = error.Message.Split('\n').Select(l => l.Trim()).Where(l => l.StartsWith("* ", StringComparison.Ordinal))
                    .Select(l => l[2..]).ToList();
                return Stale(missing.Count > 0
                    ? $"no adapter for {string.Join(", ", missing)}"
                    : error.Message.Split('\n')[0].Trim());
            default:
                return null;
        }
    }

    private static string Stale(string what) =>
        $"the generated code ({CommittedDirectory}) does not match this build: {what}. Regenerate it with `{RegenerateCommand}`, then build again.";
}

/// <summary>The committed generated code does not cover what this build declares.</summary>
public sealed class StaleGeneratedCodeException(string message) : Exception(message);
