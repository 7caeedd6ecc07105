using System.Reflection;
using System.Text.Json.Nodes;
using Ledger.Runs;
using Ledger.Tests.Contract;

namespace Ledger.Tests.WorkerClient;

/// <summary>
/// The worker clients follow the committed API description: every worker event type it describes
/// (one per row of <see cref="WorkerEventCatalogue"/>) has its wire name in the .NET client's
/// <c>EventTypes</c> and each of its fields a member of the client's <c>EventWire</c>, and the Python
/// client sends it. A type added to the table fails here until both clients can send it.
/// </summary>
public sealed class ClientsFollowTheDescriptionTests
{
    [Fact]
    public void every_described_worker_event_type_and_field_is_in_both_clients()
    {
        var described = DescribedEventTypes();
        Assert.Equal(WorkerEventCatalogue.Default.WireNames.Order(), described.Keys.Order());

        var client = typeof(Ledger.Client.LedgerClient).Assembly;
        var eventTypes = client.GetType("Ledger.Client.EventTypes", throwOnError: true)!
            .GetFields(BindingFlags.Public | BindingFlags.Static).Select(f => (string)f.GetRawConstantValue()!).ToHashSet();
        var wireMembers = client.GetType("Ledger.Client.EventWire", throwOnError: true)!
            .GetProperties().Select(p => JsonName(p.Name)).ToHashSet();
        var python = File.ReadAllText(Path.Combine(ContractTools.RepoRoot, "clients", "python", "run_ledger", "client.py"));

        foreach (var (wire, fields) in described)
        {
            Assert.True(eventTypes.Contains(wire), $"the .NET client's EventTypes has no {wire}");
            Assert.All(fields, f => Assert.True(wireMembers.Contains(f), $"the .NET client's EventWire has no member for {wire}'s {f}"));
            Assert.True(python.Contains($"\"type\": \"{wire}\"", StringComparison.Ordinal), $"the Python client never sends {wire}");
        }
    }

    /// <summary>Each worker event schema of docs/openapi/v1.json: its `type` constant and its property names.</summary>
    private static Dictionary<string, IReadOnlyList<string>> DescribedEventTypes()
    {
        var document = JsonNode.Parse(File.ReadAllText(Path.Combine(ContractTools.RepoRoot, ContractTools.CommittedDescription)))!;
        var schemas = document["components"]!["schemas"]!;
        var types = new Dictionary<string, IReadOnlyList<string>>();
        foreach (var reference in schemas["WorkerEvent"]!["oneOf"]!.AsArray())
        {
            var name = reference!["$ref"]!.GetValue<string>().Split('/')[^1];
            var properties = schemas[name]!["properties"]!.AsObject();
            types[properties["type"]!["const"]!.GetValue<string>()] = properties.Select(p => p.Key).ToList();
        }
        return types;
    }

    private static string JsonName(string member) => char.ToLowerInvariant(member[0]) + member[1..];
}
