using JasperFx.CommandLine;
using Ledger.Infrastructure;
using Marten;

namespace Ledger.Retention;

public sealed class RestoreInput : NetCoreInput
{
    [Description("The run whose archived events go back into PostgreSQL")]
    [FlagAlias("run")]
    public string? RunFlag { get; set; }

    [Description("Why (kept in the log)")]
    [FlagAlias("reason")]
    public string? ReasonFlag { get; set; }
}

[Description("Put an archived run's events back into PostgreSQL, all or nothing, after checking its archive (restore --run ID)", Name = "restore")]
public sealed class RestoreCommand : JasperFxAsyncCommand<RestoreInput>
{
    public override async Task<bool> Execute(RestoreInput input)
    {
        if (string.IsNullOrWhiteSpace(input.RunFlag))
        {
            Console.Error.WriteLine("restore: give the run with --run ID");
            return false;
        }
        using var host = input.BuildHost();
        await host.Services.GetRequiredService<IDocumentStore>().Storage.ApplyAllConfiguredChangesToDatabaseAsync();
        try
        {
            var restored = await host.Services.GetRequiredService<RunRestorer>().RestoreAsync(input.RunFlag, input.ReasonFlag, CancellationToken.None);
            Console.WriteLine($"restore: run {restored.RunId}: {restored.Events} events (versions 1..{restored.Version}) are back in PostgreSQL " +
                              $"from {restored.Bundles} bundle(s); it stays there for a whole window before it can be archived again");
            return true;
        }
        catch (ProblemException e)
        {
            Console.Error.WriteLine($"restore: {e.Problem.Code}: {e.Problem.Detail ?? e.Problem.Title}");
            return false;
        }
    }
}
