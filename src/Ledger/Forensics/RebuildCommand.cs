using JasperFx.CommandLine;
using JasperFx.Events.Projections;
using Ledger.Infrastructure;
using Ledger.Webhooks;
using Marten;
using Microsoft.Extensions.Options;

namespace Ledger.Forensics;

public sealed class RebuildInput : NetCoreInput
{
    [Description("Rebuild only this projection (Run, Ledger.Runs.LeaseHolderProjection, Standing); all of them by default")]
    [FlagAlias("projection")]
    public string? ProjectionFlag { get; set; }
}

/// <summary>
/// Rebuilds the projections in place from the events alone through Marten's projection daemon
/// (what the bench times), with its progress (<see cref="LongWork"/>). The webhook relay is not a
/// projection and is left where it is: a rebuild sends nothing. Run it with the service stopped.
/// </summary>
[Description("Rebuild the projections (runs, the lease index, the leaderboard standings) in place from the events alone; stop the service first", Name = "rebuild")]
public sealed class RebuildCommand : JasperFxAsyncCommand<RebuildInput>
{
    public override async Task<bool> Execute(RebuildInput input)
    {
        using var host = input.BuildHost();
        var store = (DocumentStore)host.Services.GetRequiredService<IDocumentStore>();
        await store.Storage.ApplyAllConfiguredChangesToDatabaseAsync();
        var projections = store.Options.Projections.All.Select(p => p.Name).Where(n => n != WebhookRelay.Name).ToList();
        if (input.ProjectionFlag is { } only)
        {
            if (!projections.Contains(only))
            {
                Console.Error.WriteLine($"rebuild: no projection '{only}'; the projections are {string.Join(", ", projections)}");
                return false;
            }
            projections = [only];
        }

        var highWater = await store.Storage.Database.FetchHighestEventSequenceNumber();
        using var daemon = await store.BuildProjectionDaemonAsync();
        var took = System.Diagnostics.Stopwatch.StartNew();
        await LongWork.RunAsync("rebuild", host.Services.GetRequiredService<IOptions<ProgressOptions>>().Value, async progress =>
        {
            foreach (var name in projections)
            {
                // Progress by event sequence: how far the rebuilding shard has come of the last event stored.
                var stage = progress.Stage(name, highWater);
                using var watching = daemon.Tracker.Subscribe(new ShardProgress(name, stage));
                await daemon.RebuildProjectionAsync(name, TimeSpan.FromMinutes(30), CancellationToken.None);
                stage.Report(highWater);
                stage.Complete();
            }
            return true;
        });
        Console.WriteLine($"rebuild: {string.Join(", ", projections)} rebuilt from {highWater:N0} events in {took.Elapsed.TotalSeconds:0.0} s");
        return true;
    }

    private sealed class ShardProgress(string projection, ProgressStage stage) : IObserver<ShardState>
    {
        public void OnNext(ShardState value)
        {
            if (value.ShardName.StartsWith(projection + ":", StringComparison.Ordinal) && value.Sequence > stage.Done) stage.Report(value.Sequence);
        }

        public void OnCompleted() { }
        public void OnError(Exception error) { }
    }
}
