namespace Ledger.Client;

/// <summary>Anything the ledger client reports about the ledger's answer.</summary>
public abstract class LedgerException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// The ledger answered <c>retryable: false</c>: the same request will be refused again, so the
/// client never retries it. Fix the request or stop. Thrown at once, after one request.
/// </summary>
public class LedgerRefusedException(LedgerProblem problem)
    : LedgerException($"The ledger refused the request: {problem.Code ?? problem.Status.ToString()} ({problem.Status}){(problem.Detail is null ? "" : ": " + problem.Detail)}")
{
    public LedgerProblem Problem { get; } = problem;
    /// <summary>The problem type, <c>urn:run-ledger:problem:&lt;code&gt;</c>.</summary>
    public string? Type => Problem.Type;
    public string? Code => Problem.Code;
    /// <summary>The HTTP status.</summary>
    public int Status => Problem.Status;
    public string? Detail => Problem.Detail;
    /// <summary>The run's status when the ledger refused, when the refusal is about a run.</summary>
    public string? RunStatus => Problem.RunStatus;
    /// <summary>Field -> messages, for invalid input.</summary>
    public IReadOnlyDictionary<string, string[]> Errors => Problem.Errors ?? new Dictionary<string, string[]>();
    /// <summary>The values a field takes, when it takes only listed ones.</summary>
    public IReadOnlyList<string> Allowed => Problem.Allowed ?? [];
}

/// <summary>
/// The run has ended (terminal, lease expired, lease lost to a later claim, cancelled, lost):
/// stop working on it. Once a session has learned this, every call on it throws this, and
/// <see cref="RunSession.Stopped"/> has fired.
/// </summary>
public sealed class RunTerminatedException : LedgerException
{
    public RunTerminatedException(string runId, string? runStatus, string? code, string message, LedgerProblem? problem = null)
        : base(message)
    {
        RunId = runId;
        RunStatus = runStatus;
        Code = code;
        Problem = problem;
    }

    public string RunId { get; }
    /// <summary>The run's status as the ledger last said it (e.g. lost, cancelled, succeeded), when known.</summary>
    public string? RunStatus { get; }
    /// <summary>The problem code that ended the session (run-terminal, lease-expired, lease-lost), or null when a
    /// successful answer reported a terminal status.</summary>
    public string? Code { get; }
    public LedgerProblem? Problem { get; }

    internal RunTerminatedException Again() => new(RunId, RunStatus, Code, Message, Problem);
}

/// <summary>
/// The ledger could not be reached or kept answering a retryable refusal (429, 503, 500) through
/// every attempt of the resilience pipeline. Sending the same call again later is safe: every
/// event carries its eventId, and a recorded event is answered as a duplicate.
/// </summary>
public sealed class LedgerUnavailableException(string message, LedgerProblem? problem = null, Exception? inner = null)
    : LedgerException(message, inner)
{
    public LedgerProblem? Problem { get; } = problem;
}

/// <summary>
/// Thrown locally, before anything is sent: completion was asked while a required score or
/// output from the claim's requirements has not been acknowledged by the ledger. Report them
/// first, or complete with <c>force: true</c>.
/// </summary>
public sealed class RequirementsNotMetException(string runId, IReadOnlyList<string> missing)
    : InvalidOperationException($"Run '{runId}' cannot be completed yet: {string.Join(", ", missing)} not acknowledged by the ledger. Report them first, or complete with force: true.")
{
    public string RunId { get; } = runId;
    /// <summary>What is missing, as the ledger spells it: <c>score:NAME</c>, <c>output:NAME</c>.</summary>
    public IReadOnlyList<string> Missing { get; } = missing;
}
