using System.Linq.Expressions;
using System.Reflection;
using System.Text.Json;
using Marten;
using Weasel.Core;

namespace Ledger.Infrastructure;

/// <summary>
/// The one place raw SQL takes its storage names from. Tables, JSON keys and event type names are
/// read from Marten's own mapping of the store (so a change of schema, table or casing changes the
/// SQL with it); the ledger's own tables are named here once. StorageNamesTests checks every name
/// against a real database.
/// </summary>
public sealed class StorageNames
{
    private readonly IReadOnlyStoreOptions _options;
    // Read when a JSON key is first asked for, so that the store's configuration (which names tables and
    // functions before its serializer is set) can use the names too.
    private readonly Lazy<JsonNamingPolicy?> _casing;

    public StorageNames(IDocumentStore store) : this(store.Options)
    {
    }

    public StorageNames(IReadOnlyStoreOptions options)
    {
        _options = options;
        _casing = new(() => options.Serializer().Casing switch
        {
            Casing.CamelCase => JsonNamingPolicy.CamelCase,
            Casing.SnakeCase => JsonNamingPolicy.SnakeCaseLower,
            _ => null,
        });
    }

    /// <summary>
    /// A table or function of <paramref name="schema"/>: the one place a schema-qualified name is written.
    /// For the statements built where only the schema's name is at hand (a session's queued commands).
    /// </summary>
    public static string Qualified(string schema, string name) => $"{schema}.{name}";

    /// <summary>The schema every table of the ledger lives in.</summary>
    public string Schema => _options.DatabaseSchemaName;

    /// <summary>Marten's event table (qualified).</summary>
    public string Events => _options.Schema.ForEvents();

    /// <summary>Marten's stream table (qualified).</summary>
    public string Streams => _options.Schema.ForStreams();

    /// <summary>Marten's table of async projection positions (qualified).</summary>
    public string Progression => _options.Schema.ForEventProgression();

    /// <summary>The name an event type is stored under in the event table's <c>type</c> column.</summary>
    public string EventType<T>() => ((Marten.Events.EventGraph)((StoreOptions)_options).Events).EventMappingFor(typeof(T)).EventTypeName;

    /// <summary>The table a document type is stored in (qualified).</summary>
    public string Table<T>() => _options.Schema.For<T>();

    /// <summary>A table the ledger manages beside Marten's (qualified); its unqualified name is a constant of its owner.</summary>
    public string Own(string table) => Qualified(Schema, table);

    /// <summary>A function Marten installs in the schema, e.g. the immutable cast its computed indexes use.</summary>
    public string Function(string name) => Qualified(Schema, name);

    /// <summary>The key a member has in the stored JSON document (the serializer's casing).</summary>
    public string JsonKey<T>(Expression<Func<T, object?>> member) => KeyOf(MemberOf(member).Name);

    /// <summary><c>data ->> 'key'</c>: a member of the stored document as text, optionally on a table alias.</summary>
    public string Json<T>(Expression<Func<T, object?>> member, string? alias = null) =>
        $"{(alias is null ? "" : alias + ".")}data ->> '{JsonKey(member)}'";

    /// <summary>
    /// The column a duplicated member of a document is copied into (Marten's duplicated field, with its
    /// plain index), optionally on a table alias: what raw SQL filters and sorts on, where the JSON
    /// expression (<see cref="Json{T}"/>) has no index.
    /// </summary>
    public string Column<T>(Expression<Func<T, object?>> member, string? alias = null)
    {
        var name = MemberOf(member).Name;
        var field = ((Marten.Schema.DocumentMapping)_options.FindOrResolveDocumentType(typeof(T))).DuplicatedFields
            .FirstOrDefault(f => f.Members.Length == 1 && f.Members[0].Name == name)
            ?? throw new ArgumentException($"{typeof(T).Name}.{name} is not a duplicated field of its document", nameof(member));
        return $"{(alias is null ? "" : alias + ".")}{field.ColumnName}";
    }

    private string KeyOf(string name) => _casing.Value?.ConvertName(name) ?? name;

    private static MemberInfo MemberOf<T>(Expression<Func<T, object?>> expression)
    {
        var body = expression.Body is UnaryExpression { NodeType: ExpressionType.Convert } convert ? convert.Operand : expression.Body;
        return body is MemberExpression { Expression: ParameterExpression } m
            ? m.Member
            : throw new ArgumentException($"Expected a direct member of {typeof(T).Name}, got {expression}", nameof(expression));
    }
}
