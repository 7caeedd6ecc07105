using System.Diagnostics;

namespace Ledger.Tests.Contract;

/// <summary>
/// The repository's own contract tooling, installed on first use: the npm packages of tools/contract
/// (<c>npm ci</c> when node_modules is absent) and the dotnet tools of .config/dotnet-tools.json.
/// Both installs are idempotent; tools/contract/install.sh does the same from a shell.
/// </summary>
public static class ContractTools
{
    public const string CommittedDescription = "docs/openapi/v1.json";
    private static readonly SemaphoreSlim NpmInstall = new(1, 1);

    public static string RepoRoot { get; } = FindRoot();

    public static string ToolsFolder => Path.Combine(RepoRoot, "tools", "contract");

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Ledger.sln"))) return dir.FullName;
        }
        throw new InvalidOperationException("Ledger.sln not found above " + AppContext.BaseDirectory);
    }

    public static async Task EnsureNodeModules()
    {
        await NpmInstall.WaitAsync();
        try
        {
            var marker = Path.Combine(ToolsFolder, "node_modules", ".package-lock.json");
            var lockFile = Path.Combine(ToolsFolder, "package-lock.json");
            if (File.Exists(marker) && File.GetLastWriteTimeUtc(marker) >= File.GetLastWriteTimeUtc(lockFile)) return;
            var install = await Run("npm", ["ci", "--no-audit", "--no-fund"], ToolsFolder, TimeSpan.FromMinutes(5));
            Assert.True(install.ExitCode == 0, $"npm ci in tools/contract failed:\n{install.Output}");
        }
        finally
        {
            NpmInstall.Release();
        }
    }

    /// <summary>A program of tools/contract/node_modules/.bin, after installing them when needed.</summary>
    public static async Task<ProcessResult> Npx(string tool, IEnumerable<string> arguments, string? workingDirectory = null, TimeSpan? timeout = null)
    {
        await EnsureNodeModules();
        return await Run(Path.Combine(ToolsFolder, "node_modules", ".bin", tool), arguments, workingDirectory ?? ToolsFolder,
            timeout ?? TimeSpan.FromMinutes(3));
    }

    public sealed record ProcessResult(int ExitCode, string Output);

    public static async Task<ProcessResult> Run(string program, IEnumerable<string> arguments, string workingDirectory, TimeSpan timeout,
        IReadOnlyDictionary<string, string>? environment = null)
    {
        var start = new ProcessStartInfo(program)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        // No telemetry, no update checks: the tools ask nobody anything.
        start.Environment["REDOCLY_TELEMETRY"] = "off";
        start.Environment["REDOCLY_SUPPRESS_UPDATE_NOTICE"] = "true";
        start.Environment["KIOTA_TUTORIAL_ENABLED"] = "false";
        start.Environment["KIOTA_OFFLINE_ENABLED"] = "true";
        start.Environment["KIOTA_CLI_TELEMETRY_OPTOUT"] = "true";
        start.Environment["NO_UPDATE_NOTIFIER"] = "1";
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        foreach (var (key, value) in environment ?? new Dictionary<string, string>()) start.Environment[key] = value;

        using var process = Process.Start(start)!;
        var output = new System.Text.StringBuilder();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cancel = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cancel.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} {string.Join(' ', start.ArgumentList)} ran longer than {timeout}");
        }
        output.Append(await stdout).Append(await stderr);
        return new ProcessResult(process.ExitCode, output.ToString());
    }
}
