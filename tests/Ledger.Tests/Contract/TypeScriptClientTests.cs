using Ledger.Tests.Infrastructure;
using Npgsql;

namespace Ledger.Tests.Contract;

/// <summary>
/// A TypeScript client from the committed description: openapi-typescript generates the types,
/// `tsc` type-checks tools/contract/ts-client/drive-run.ts against them, and the program (openapi-fetch)
/// drives a run to succeeded against the real service on a real port. Nothing generated is committed.
/// </summary>
public sealed class TypeScriptClientTests
{
    [Fact]
    public async Task a_typescript_client_generated_from_the_description_type_checks_and_drives_a_run_to_succeeded()
    {
        var folder = Path.Combine(ContractTools.ToolsFolder, "ts-client");
        var description = Path.Combine(ContractTools.RepoRoot, ContractTools.CommittedDescription);
        Directory.CreateDirectory(Path.Combine(folder, "generated"));
        var generated = await ContractTools.Npx("openapi-typescript", [description, "-o", Path.Combine(folder, "generated", "ledger-api.d.ts")]);
        Assert.True(generated.ExitCode == 0, $"openapi-typescript failed:\n{generated.Output}");
        var compiled = await ContractTools.Npx("tsc", ["-p", folder]);
        Assert.True(compiled.ExitCode == 0, $"tsc found errors in the client against the description:\n{compiled.Output}");

        var (server, database, name) = Fixtures.TestDatabase.Create();
        try
        {
            var env = new Dictionary<string, string?>
            {
                ["ASPNETCORE_ENVIRONMENT"] = "Production",
                ["Ledger__AdminKey"] = "ts-admin-key-for-tests",
                ["Ledger__WorkerKeys__0"] = "ts-worker-key-for-tests",
                ["Ledger__ReadKeys__0"] = "ts-read-key-for-tests",
                ["ConnectionStrings__Ledger"] = database,
                ["Ledger__Janitor__Enabled"] = "false",
                ["Ledger__DaemonMode"] = "Disabled",
            };
            using var service = LedgerProcess.Start(env, ["--urls", "http://127.0.0.1:0"], Directory.GetCurrentDirectory());
            var address = await service.WaitForAddress(TimeSpan.FromSeconds(90));

            var run = await ContractTools.Run("node", [Path.Combine(folder, "out", "drive-run.js")], folder, TimeSpan.FromMinutes(2),
                new Dictionary<string, string>
                {
                    ["LEDGER_URL"] = address,
                    ["LEDGER_ADMIN_KEY"] = "ts-admin-key-for-tests",
                    ["LEDGER_WORKER_KEY"] = "ts-worker-key-for-tests",
                    ["LEDGER_READ_KEY"] = "ts-read-key-for-tests",
                });
            Assert.True(run.ExitCode == 0, $"the TypeScript client failed:\n{run.Output}");
            Assert.Contains("succeeded", run.Output);
            service.Terminate(TimeSpan.FromSeconds(30));
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            Fixtures.TestDatabase.Drop(server, name);
        }
    }
}
