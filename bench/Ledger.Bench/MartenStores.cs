using System.Reflection;
using System.Text.Json;
using JasperFx;
using JasperFx.Events;
using Ledger.Infrastructure;
using Ledger.Runs;
using Marten;

namespace Ledger.Bench;

/// <summary>
/// In-process Marten stores. <see cref="Mirror"/> reproduces the service's Marten configuration
/// (src/Ledger/Program.cs, AddMarten): the storage settings come from the service's own
/// <c>UseLedgerStorage</c>, and the store extensions (<c>AddRuns</c>, <c>AddLeaderboards</c>,
/// <c>AddForensics</c>, and any later <c>Add*</c>) are found in the service assembly by
/// signature, so new projections and storage changes are picked up without touching the bench.
/// </summary>
public static class MartenStores
{
    /// <summary>The service's own configuration, on the given schema.</summary>
    public static void Mirror(StoreOptions options, string connectionString, string schema, EventAppendMode? appendMode = null)
    {
        Common(options, connectionString, schema, appendMode);
        foreach (var extension in ServiceStoreExtensions()) extension.Invoke(null, [options]);
    }

    /// <summary>Only the run event types: a bare event store, for the append-mode figures.</summary>
    public static void EventsOnly(StoreOptions options, string connectionString, string schema, EventAppendMode appendMode)
    {
        Common(options, connectionString, schema, appendMode);
        options.Events.AddEventTypes(RunEventTypes());
    }

    private static void Common(StoreOptions options, string connectionString, string schema, EventAppendMode? appendMode)
    {
        // The service's own storage settings (serializer, stream identity, metadata columns, append
        // mode), so that the bench writes exactly the columns the service's schema has.
        options.UseLedgerStorage(connectionString, schema);
        if (appendMode is { } mode) options.Events.AppendMode = mode;
        options.DisableNpgsqlLogging = true;
    }

    /// <summary>Public static <c>StoreOptions X(this StoreOptions)</c> methods of the service assembly.</summary>
    public static IReadOnlyList<MethodInfo> ServiceStoreExtensions() =>
        typeof(Run).Assembly.GetExportedTypes()
            .Where(t => t is { IsAbstract: true, IsSealed: true }) // static classes
            .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.Static))
            .Where(m => m.IsDefined(typeof(System.Runtime.CompilerServices.ExtensionAttribute), false)
                        && m.ReturnType == typeof(StoreOptions)
                        && m.GetParameters() is [{ ParameterType: var p }] && p == typeof(StoreOptions))
            .OrderBy(m => m.DeclaringType!.FullName, StringComparer.Ordinal)
            .ToList();

    public static Type[] RunEventTypes() =>
        typeof(Run).Assembly.GetExportedTypes()
            .Where(t => t.Namespace == typeof(Run).Namespace && !t.IsAbstract
                        && (typeof(WorkerEvent).IsAssignableFrom(t) || t == typeof(RunRegistered) || t == typeof(RunClaimed)))
            .ToArray();

    public static async Task<DocumentStore> CreateAsync(Action<StoreOptions> configure, bool applySchema)
    {
        var store = DocumentStore.For(o =>
        {
            configure(o);
            o.AutoCreateSchemaObjects = applySchema ? AutoCreate.CreateOrUpdate : AutoCreate.None;
        });
        if (applySchema) await store.Storage.ApplyAllConfiguredChangesToDatabaseAsync();
        return store;
    }

    /// <summary>The wire event as the service turns it into a stream event.</summary>
    public static WorkerEvent ToEvent(WireEvent wire, DateTimeOffset recordedAt) =>
        JsonSerializer.Deserialize<WorkerEventRequest>(wire.Json, LedgerJson.Options)!.ToEvent(recordedAt);

    public static RunRegistered Registered(RunScript script, DateTimeOffset at, string? board = null, string? participant = null) =>
        new(script.RunId, board, participant, null, new Dictionary<string, string>(),
            Workload.RequiredScores, [Workload.RequiredOutput], script.ExpectedItems, 3600, at);

    public static RunClaimed Claimed(string token, DateTimeOffset at) =>
        new("bench-worker", Access.DigestHex(token), at, at.AddHours(1));
}
