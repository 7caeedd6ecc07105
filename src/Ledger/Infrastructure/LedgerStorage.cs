using System.Text.Json;
using System.Text.Json.Serialization;
using JasperFx.Events;
using Marten;
using Weasel.Core;

namespace Ledger.Infrastructure;

public static class LedgerStorage
{
    /// <summary>How the ledger stores documents and events; shared by the service and by verify's scratch store.</summary>
    public static StoreOptions UseLedgerStorage(this StoreOptions options, string connectionString, string schema)
    {
        options.Connection(connectionString);
        options.DatabaseSchemaName = schema;
        options.UseSystemTextJsonForSerialization(EnumStorage.AsString, Casing.CamelCase,
            configure: json => json.Converters.Add(new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower)));
        options.Events.StreamIdentity = StreamIdentity.AsString;
        // One statement per batch instead of one per event; the ledger's own RecordedAt carries time.
        options.Events.AppendMode = EventAppendMode.Quick;
        // A statement another node's schema change invalidated is run again (ConnectionSettings): a read, or a
        // commit, whose transaction failed at that statement, before its COMMIT, so nothing of it was recorded.
        options.ExtendPolly(polly => polly.RetryStaleStatements());
        options.ExtendWritePolly(polly => polly.RetryStaleStatements());
        return options;
    }
}
