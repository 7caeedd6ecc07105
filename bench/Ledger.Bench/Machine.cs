using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Ledger.Bench;

public sealed record Machine(int Cores, double MemoryGiB, string Cpu, string Postgres, string DotNet, string Os, DateTime At, string Source)
{
    public string Line =>
        $"Machine: {Cores} cores, {MemoryGiB:0.0} GiB memory, CPU {Cpu}, PostgreSQL {Postgres}, {DotNet}, {Os}, {At:yyyy-MM-dd HH:mm} UTC, ledger {Source}";

    public static Machine Read(string postgresVersion, string repoRoot)
    {
        var memKb = ReadField("/proc/meminfo", "MemTotal:");
        var cpu = ReadField("/proc/cpuinfo", "model name") ?? RuntimeInformation.ProcessArchitecture.ToString();
        var memGiB = memKb is null ? 0 : long.Parse(new string(memKb.Where(char.IsDigit).ToArray())) / 1024.0 / 1024.0;
        return new Machine(Environment.ProcessorCount, memGiB, cpu.Trim(), postgresVersion,
            RuntimeInformation.FrameworkDescription, RuntimeInformation.OSDescription, DateTime.UtcNow, SourceVersion(repoRoot));
    }

    private static string? ReadField(string file, string prefix)
    {
        try
        {
            var line = File.ReadLines(file).FirstOrDefault(l => l.StartsWith(prefix, StringComparison.Ordinal));
            return line?[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { return null; }
    }

    /// <summary>The commit the service was built from, and whether src/ had uncommitted changes.</summary>
    private static string SourceVersion(string repoRoot)
    {
        var head = Git(repoRoot, "rev-parse --short HEAD") ?? "unknown";
        var dirty = Git(repoRoot, "status --porcelain -- src") is { Length: > 0 };
        return dirty ? $"{head} + uncommitted changes in src/" : head;
    }

    private static string? Git(string repo, string args)
    {
        try
        {
            var psi = new ProcessStartInfo("git", $"-C \"{repo}\" {args}") { RedirectStandardOutput = true, RedirectStandardError = true };
            using var p = Process.Start(psi)!;
            var output = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit(5000);
            return p.ExitCode == 0 ? output : null;
        }
        catch (System.ComponentModel.Win32Exception) { return null; }
    }
}
