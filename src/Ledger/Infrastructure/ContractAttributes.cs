namespace Ledger.Infrastructure;

/// <summary>The bearer credentials the ledger knows; each is one security scheme of the API description.</summary>
public enum Credential { AdminKey, WorkerKey, ReadKey, LeaseToken }

/// <summary>
/// The JSON body an endpoint reads itself (through <see cref="RequestGate"/> or <see cref="RequestBody"/>),
/// so that the API description can show it: the framework cannot see a body it does not bind.
/// </summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class JsonBodyAttribute(Type type) : Attribute
{
    public Type Type { get; } = type;
    /// <summary>The body may be left out (an empty body is read as <c>{}</c>).</summary>
    public bool Optional { get; init; }
}

/// <summary>
/// The credentials an endpoint accepts, as it checks them (<see cref="Access.Require"/> roles or the
/// run's lease token). The description derives its security requirements and its 401/403 answers from it.
/// </summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class AcceptsAttribute(params Credential[] credentials) : Attribute
{
    public IReadOnlyList<Credential> Credentials { get; } = credentials;
}

/// <summary>
/// The refusals particular to an endpoint (codes of <see cref="ProblemCatalogue"/>). Those every endpoint
/// of its kind can give (credentials, body, database, defects) are added by the description itself.
/// </summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class RefusesAttribute(params string[] codes) : Attribute
{
    public IReadOnlyList<string> Codes { get; } = codes;
    /// <summary>The endpoint's decision goes through the run writer: it can answer 503 <c>contention</c> or <c>overloaded</c>.</summary>
    public bool Contended { get; init; }
}
