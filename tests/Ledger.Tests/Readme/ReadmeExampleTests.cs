using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Ledger.Tests.Contract;
using Ledger.Tests.Infrastructure;

namespace Ledger.Tests.Readme;

/// <summary>
/// The ledger as <c>dotnet run --project src/Ledger</c> starts it (Development, its private
/// PostgreSQL), on a port and a cluster of this class's own, with the janitor sweeping every
/// second so that the examples that wait for a lost run wait seconds, not a minute.
/// </summary>
public sealed class ReadmeLedger : IAsyncLifetime
{
    private readonly PrivateCluster _cluster = new();
    private LedgerProcess? _process;

    public int Port { get; } = FreePort();
    public string Url => $"http://localhost:{Port}";

    public async Task InitializeAsync()
    {
        _process = LedgerProcess.Start(Environment(), ["--urls", Url], Directory.GetCurrentDirectory());
        await _process.WaitForAddress(TimeSpan.FromSeconds(120));
    }

    /// <summary>The environment of dotnet run (its launch profile's Development), on this class's cluster.</summary>
    public Dictionary<string, string?> Environment() => new()
    {
        ["LEDGER_DEFAULT_ENVIRONMENT"] = "Development",
        ["Ledger__EmbeddedPostgres__Port"] = _cluster.Port.ToString(),
        ["Ledger__EmbeddedPostgres__DataDirectory"] = _cluster.DataDirectory,
        ["Ledger__Janitor__IntervalSeconds"] = "1",
        ["Ledger__Janitor__GraceSeconds"] = "1",
    };

    public Task DisposeAsync()
    {
        if (_process is not null)
        {
            var stopped = _process.Terminate(TimeSpan.FromSeconds(60));
            _process.Dispose();
            Assert.True(stopped.ExitCode == 0, stopped.All);
        }
        _cluster.Dispose();
        return Task.CompletedTask;
    }

    public static int FreePort() => TestPorts.Next();
}

/// <summary>
/// Every example of the README and of the Python client's README, run as written against a real
/// ledger process, and checked against what the README says it prints (its <c># →</c> comments),
/// not only for its exit code. The few things the test changes are listed in
/// <see cref="Substitutions"/>, and each must be found: the ledger's address (it runs on a port of
/// its own, beside whatever else runs here), the receiver's port, and <c>dotnet run --project
/// src/Ledger --</c> as the same binary already built (<c>dotnet exec</c>).
/// </summary>
public sealed class ReadmeExampleTests(ReadmeLedger ledger) : IClassFixture<ReadmeLedger>, IDisposable
{
    private static readonly TimeSpan Limit = TimeSpan.FromMinutes(6);

    private static string Repository => ContractTools.RepoRoot;

    private static IReadOnlyList<Example> Root => ReadmeExamples.Blocks(Path.Combine(Repository, "README.md"), "README.md");

    private static IReadOnlyList<Example> Client =>
        ReadmeExamples.Blocks(Path.Combine(Repository, "clients", "python", "README.md"), "clients/python/README.md");

    private (string From, string To)[] Substitutions(int receiverPort) =>
    [
        ("http://localhost:5080", ledger.Url),
        ("http://127.0.0.1:5080", $"http://127.0.0.1:{ledger.Port}"),
        ("dotnet run --project src/Ledger --", $"dotnet exec {LedgerProcess.ServiceAssembly()}"),
        ("9099", receiverPort.ToString()),
    ];

    [Fact]
    public void every_fenced_example_of_the_readmes_is_run_or_says_why_not()
    {
        var blocks = Root.Concat(Client).Where(b => ReadmeExamples.RunnableLanguages.Contains(b.Language)).ToList();
        var unmarked = blocks.Where(b => b.Name is null && b.NotRun is null).ToList();
        Assert.True(unmarked.Count == 0, "blocks without <!-- example: ... --> or <!-- not run: ... --> above them: " + string.Join(", ", unmarked));
        // The ones the issue names are run, not excused.
        var run = blocks.Where(b => b.Name is not null).Select(b => b.Name!.Split(' ')[0]).ToList();
        foreach (var name in new[] { "walk-through", "batches", "webhook", "forensics", "incidents", "python", "install" })
        {
            Assert.Contains(name, run);
        }
        // Every run example states what it prints.
        foreach (var block in blocks.Where(b => b.Name is not null))
        {
            var stated = block.Language == "python" ? ReadmeExamples.Expectations(block).Count
                : ReadmeExamples.Parse(block) is var (commands, checks) ? commands.Sum(c => c.Expected.Count) + checks.Sum(c => c.Expected.Count) : 0;
            Assert.True(stated > 0, $"{block} says nothing about what it prints (no # → comment)");
        }
    }

    [Fact]
    public void the_expectations_are_read_as_the_readme_writes_them()
    {
        var (commands, checks) = ReadmeExamples.Parse(new Example("t", 1, "bash", """
            X=$(echo '{"a":1}' \
              | sed 's/1/2/')   # set → "a":2
            echo "$X"           # → "a":2, {"a":2}
            curl -d '[
              {"b": "c # not a comment"}]'
                                # → "status":"succeeded", "missing":["x","y"]

            # → a, b…c
            """, "t", null));
        Assert.Equal(3, commands.Count);
        Assert.Equal(["\"a\":2"], commands[0].Expected);
        Assert.Equal(["\"a\":2", "{\"a\":2}"], commands[1].Expected);
        Assert.Contains("not a comment", commands[2].Text);
        Assert.Equal(["\"status\":\"succeeded\"", "\"missing\":[\"x\",\"y\"]"], commands[2].Expected);
        var check = Assert.Single(checks);
        Assert.Equal(3, check.AfterCommand);
        Assert.Equal(["a", "b…c"], check.Expected);
        Assert.True(ReadmeExamples.Shows("x b and c y", "b…c"));
        Assert.False(ReadmeExamples.Shows("b\nc", "b…c"));
    }

    [Fact]
    public async Task the_readmes_bash_examples_run_in_order_and_print_what_they_say()
    {
        var receiverPort = ReadmeLedger.FreePort();
        var examples = Root.Where(b => b.Name is not null && b.Language == "bash").ToList();
        var used = new HashSet<string>();
        // A receiver started in the background ends with the script, whatever happens.
        var script = new StringBuilder("set -eu -o pipefail\nexec 2>&1\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n");
        var steps = new List<(ReadmeExamples.Command Command, Example Block)>();
        var checks = new List<(ReadmeExamples.Check Check, Example Block)>();
        foreach (var example in examples)
        {
            var (commands, blockChecks) = ReadmeExamples.Parse(example);
            var from = steps.Count;
            foreach (var command in commands)
            {
                script.Append(Substitute(command.Text, receiverPort, used)).Append('\n');
                script.Append($"printf '\\n@@step {steps.Count}\\n'\n");
                steps.Add((command with { Expected = command.Expected.Select(e => Substitute(e, receiverPort, used)).ToList() }, example));
            }
            checks.AddRange(blockChecks.Select(c => (c with { AfterCommand = from + c.AfterCommand, Expected = c.Expected.Select(e => Substitute(e, receiverPort, used)).ToList() }, example)));
        }

        var (exit, output) = await Bash(script.ToString());
        var segments = Segments(output, steps.Count);
        var done = segments.Count(s => s is not null);
        Assert.True(exit == 0 && done == steps.Count,
            $"the examples stopped at {(done < steps.Count ? steps[done].Block + " line " + steps[done].Command.Line + ": " + steps[done].Command.Text : "the end")} (exit {exit}):\n{Tail(output)}");

        var failures = new List<string>();
        for (var i = 0; i < steps.Count; i++)
        {
            foreach (var fragment in steps[i].Command.Expected.Where(f => !ReadmeExamples.Shows(segments[i]!, f)))
            {
                failures.Add($"{steps[i].Block.File}:{steps[i].Command.Line} `{First(steps[i].Command.Text)}` should print {fragment}; it printed:\n{Tail(segments[i]!)}");
            }
        }
        foreach (var (check, block) in checks)
        {
            var sofar = string.Concat(segments.Take(check.AfterCommand));
            failures.AddRange(check.Expected.Where(f => !ReadmeExamples.Shows(sofar, f)).Select(f => $"{block.File}:{check.Line} says {f} was printed; it was not"));
        }
        Assert.True(failures.Count == 0, string.Join("\n\n", failures));
        Assert.Equal(new[] { "http://127.0.0.1:5080", "http://localhost:5080", "9099", "dotnet run --project src/Ledger --" }.Order(), used.Order());
    }

    [Fact]
    public async Task the_python_client_installs_offline_and_the_python_examples_print_what_they_say()
    {
        var used = new HashSet<string>();
        var install = Assert.Single(Client, b => b.Name?.StartsWith("install") == true);
        var (commands, _) = ReadmeExamples.Parse(install);
        // With no package index at all: an install that needed one (setuptools as the build backend) fails here
        // even on a machine that could reach one.
        var (installed, installOutput) = await Bash("set -eu -o pipefail\nexec 2>&1\nexport PIP_NO_INDEX=1\n" + string.Join("\n", commands.Select(c => c.Text)));
        Assert.True(installed == 0, $"{install} failed:\n{installOutput}");
        Assert.DoesNotContain("Looking in indexes", installOutput);
        foreach (var fragment in commands.SelectMany(c => c.Expected)) Assert.True(ReadmeExamples.Shows(installOutput, fragment), $"{install} should print {fragment}:\n{installOutput}");

        foreach (var example in Client.Concat(Root).Where(b => b.Name is not null && b.Language == "python"))
        {
            File.WriteAllText(Path.Combine(WorkingDirectory, "example.py"), Substitute(example.Text, 0, used));
            var (exit, output) = await Run(Path.Combine(WorkingDirectory, ".venv", "bin", "python"), ["example.py"]);
            Assert.True(exit == 0, $"{example} failed (exit {exit}):\n{output}");
            foreach (var fragment in ReadmeExamples.Expectations(example))
            {
                Assert.True(ReadmeExamples.Shows(output, fragment), $"{example} should print {fragment}; it printed:\n{output}");
            }
        }
        Assert.Contains("http://localhost:5080", used);
    }

    // ---- running them ----

    private readonly string _cwd = Scratch();

    private string WorkingDirectory => _cwd;

    /// <summary>A directory of the test's own that looks like the repository to the examples (they name src/, examples/, clients/).</summary>
    private static string Scratch()
    {
        var dir = Directory.CreateTempSubdirectory("ledger-readme-").FullName;
        foreach (var name in new[] { "src", "examples", "clients" })
        {
            Directory.CreateSymbolicLink(Path.Combine(dir, name), Path.Combine(Repository, name));
        }
        return dir;
    }

    private string Substitute(string text, int receiverPort, HashSet<string> used)
    {
        foreach (var (from, to) in Substitutions(receiverPort))
        {
            if (from == "9099" && receiverPort == 0) continue;
            if (!text.Contains(from)) continue;
            used.Add(from);
            text = text.Replace(from, to);
        }
        return text;
    }

    private Task<(int Exit, string Output)> Bash(string script) => Run("bash", ["-c", script]);

    private async Task<(int Exit, string Output)> Run(string program, string[] args)
    {
        var psi = new ProcessStartInfo(program, args)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = _cwd,
        };
        foreach (var key in psi.Environment.Keys.ToList())
        {
            if (key.StartsWith("Ledger__", StringComparison.OrdinalIgnoreCase) || key.StartsWith("ConnectionStrings__", StringComparison.OrdinalIgnoreCase)
                || key.StartsWith("ASPNETCORE_", StringComparison.OrdinalIgnoreCase) || key is "DOTNET_ENVIRONMENT" or "LEDGER_TEST_CONNECTION" or "PYTHONPATH")
            {
                psi.Environment.Remove(key);
            }
        }
        foreach (var (key, value) in ledger.Environment()) psi.Environment[key] = value;
        psi.Environment["PYTHONDONTWRITEBYTECODE"] = "1";

        using var process = new Process { StartInfo = psi };
        var output = new StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.Append(e.Data).Append('\n'); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.Append(e.Data).Append('\n'); };
        process.Start();
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var timeout = new CancellationTokenSource(Limit);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            lock (output) Assert.Fail($"`{program} {string.Join(' ', args).Split('\n')[0]}` did not end within {Limit.TotalMinutes} min:\n{Tail(output.ToString())}");
        }
        process.WaitForExit();
        lock (output) return (process.ExitCode, output.ToString());
    }

    /// <summary>The output of each step (what it printed before its marker), null for the steps that never ran.</summary>
    private static string?[] Segments(string output, int steps)
    {
        var segments = new string?[steps];
        var start = 0;
        for (var i = 0; i < steps; i++)
        {
            var marker = output.IndexOf($"\n@@step {i}\n", start, StringComparison.Ordinal);
            if (marker < 0) break;
            segments[i] = output[start..marker];
            start = marker + $"\n@@step {i}\n".Length;
        }
        return segments;
    }

    public void Dispose()
    {
        foreach (var name in new[] { "src", "examples", "clients" }) Directory.Delete(Path.Combine(_cwd, name));
        Directory.Delete(_cwd, recursive: true);
    }

    private static string First(string command) => command.Split('\n')[0].Trim();

    private static string Tail(string text) => text.Length <= 4000 ? text : "…" + text[^4000..];
}
