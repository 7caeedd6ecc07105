using Microsoft.Extensions.Logging;

namespace Ledger.Client;

/// <summary>
/// A claimed run. Heartbeats in the background at <see cref="HeartbeatInterval"/> until it is
/// disposed or the run ends. As soon as the ledger says the run has ended (a call or a heartbeat
/// answered <c>run-terminal</c>, <c>lease-expired</c> or <c>lease-lost</c>, or an answer showing a
/// terminal status), <see cref="Stopped"/> fires and every later call throws
/// <see cref="RunTerminatedException"/>. Every event gets an eventId once, before its first attempt,
/// and keeps it through every retry.
/// </summary>
public sealed class RunSession : IAsyncDisposable
{
    private readonly LedgerTransport _transport;
    private readonly TimeProvider _time;
    private readonly ILogger _log;
    private readonly string _token;
    private readonly string _eventsPath;
    private readonly CancellationTokenSource _stopped = new();
    private readonly CancellationTokenSource _disposing = new();
    private readonly HashSet<string> _scores = new(StringComparer.Ordinal);
    private readonly HashSet<string> _outputs = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();
    private RunTerminatedException? _termination;
    private int _disposed;

    private RunSession(string runId, ClaimWire claim, string token, DateTimeOffset leaseExpiresAt, RunRequirements requirements,
        TimeSpan heartbeatInterval, LedgerTransport transport, TimeProvider time, ILogger log)
    {
        RunId = runId;
        Worker = claim.Worker;
        ClaimId = claim.ClaimId;
        _token = token;
        LeaseExpiresAt = leaseExpiresAt;
        Requirements = requirements;
        HeartbeatInterval = heartbeatInterval < TimeSpan.FromMilliseconds(50) ? TimeSpan.FromMilliseconds(50) : heartbeatInterval;
        _transport = transport;
        _time = time;
        _log = log;
        _eventsPath = $"api/runs/{Uri.EscapeDataString(runId)}/events";
    }

    internal static RunSession Start(string runId, ClaimWire claim, string token, DateTimeOffset leaseExpiresAt,
        RunRequirements requirements, TimeSpan heartbeatInterval, LedgerTransport transport, TimeProvider time, ILogger log)
    {
        var session = new RunSession(runId, claim, token, leaseExpiresAt, requirements, heartbeatInterval, transport, time, log);
        session.HeartbeatLoop = Task.Run(session.HeartbeatAsync);
        return session;
    }

    public string RunId { get; }
    public string Worker { get; }
    /// <summary>The id the claim was sent with (the same on every retry of the claim).</summary>
    public string ClaimId { get; }
    /// <summary>When the lease granted by the claim runs out unless a heartbeat extends it.</summary>
    public DateTimeOffset LeaseExpiresAt { get; }
    /// <summary>What the run needs before it can succeed, as the claim said.</summary>
    public RunRequirements Requirements { get; }
    public TimeSpan HeartbeatInterval { get; }

    /// <summary>Fires when the ledger says the run has ended (cancelled, lost, lease gone, or finished).</summary>
    public CancellationToken Stopped => _stopped.Token;

    /// <summary>Why the session stopped, once it has.</summary>
    public RunTerminatedException? Termination => Volatile.Read(ref _termination);

    /// <summary>The background heartbeat loop; it ends when the session is disposed or stopped.</summary>
    internal Task HeartbeatLoop { get; private set; } = Task.CompletedTask;

    /// <summary>Required scores and outputs the ledger has not acknowledged yet (<c>score:NAME</c>, <c>output:NAME</c>).</summary>
    public IReadOnlyList<string> MissingRequirements
    {
        get
        {
            lock (_gate)
            {
                return Requirements.Scores.Where(s => !_scores.Contains(s)).Select(s => "score:" + s)
                    .Concat(Requirements.Outputs.Where(o => !_outputs.Contains(o)).Select(o => "output:" + o))
                    .ToList();
            }
        }
    }

    /// <summary>Opens a step: sends <c>step.started</c> with a step id generated here, and returns the scope
    /// whose disposal sends <c>step.completed</c> with the same id.</summary>
    public async Task<RunStep> StepAsync(string name, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        var stepId = "step-" + LedgerClient.NewId();
        await SendAsync(EventTypes.StepStarted, cancellationToken, stepId: stepId, name: name);
        return new RunStep(this, stepId, name);
    }

    /// <summary>Runs <paramref name="body"/> as a step: completed with outcome <c>ok</c> when it returns,
    /// <c>failed</c> when it throws (the exception is rethrown).</summary>
    public async Task StepAsync(string name, Func<CancellationToken, Task> body, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(body);
        await using var step = await StepAsync(name, cancellationToken);
        try
        {
            await body(cancellationToken);
        }
        catch
        {
            step.Fail();
            throw;
        }
    }

    /// <summary>Reports scores; each is acknowledged for <see cref="CompleteAsync"/> once the ledger has it.</summary>
    public async Task<EventsAnswer> ReportScoresAsync(IReadOnlyDictionary<string, double> scores, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(scores);
        var answer = await SendAsync(EventTypes.ScoresReported, cancellationToken, scores: scores);
        if (answer.Results.All(r => r.Acknowledged))
        {
            lock (_gate) _scores.UnionWith(scores.Keys);
        }
        return answer;
    }

    /// <summary>Records an output (a uri, with its digest and size when known; zero bytes is an empty answer, not a failure).</summary>
    public async Task<EventsAnswer> RecordOutputAsync(string name, string uri, string? sha256 = null, long? bytes = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentException.ThrowIfNullOrWhiteSpace(uri);
        var answer = await SendAsync(EventTypes.OutputRecorded, cancellationToken, name: name, uri: uri, sha256: sha256, bytes: bytes);
        if (answer.Results.All(r => r.Acknowledged))
        {
            lock (_gate) _outputs.Add(name);
        }
        return answer;
    }

    /// <summary>Commits a chunk of items; the ledger counts each chunk id once.</summary>
    public Task<EventsAnswer> CommitItemsAsync(string chunkId, long count, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(chunkId);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        return SendAsync(EventTypes.ItemsCommitted, cancellationToken, chunkId: chunkId, count: count);
    }

    public Task<EventsAnswer> LogAsync(IEnumerable<string> lines, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(lines);
        return SendAsync(EventTypes.Log, cancellationToken, lines: lines.ToList());
    }

    public Task<EventsAnswer> LogAsync(string line, CancellationToken cancellationToken = default) =>
        LogAsync([line], cancellationToken);

    /// <summary>
    /// Says the work is done. Throws <see cref="RequirementsNotMetException"/> locally, before
    /// sending anything, while a required score or output from the claim has not been acknowledged,
    /// unless <paramref name="force"/>: a run cannot be completed before its results by accident.
    /// </summary>
    public async Task<EventsAnswer> CompleteAsync(long? itemsTotal = null, bool force = false, IReadOnlyList<string>? warnings = null,
        CancellationToken cancellationToken = default)
    {
        ThrowIfEnded();
        if (!force && MissingRequirements is { Count: > 0 } missing) throw new RequirementsNotMetException(RunId, missing);
        return await SendAsync(EventTypes.RunCompleted, cancellationToken, itemsTotal: itemsTotal, warnings: warnings);
    }

    /// <summary>Says the work failed, with its class (see <see cref="ErrorClasses"/>) and a message.</summary>
    public Task<EventsAnswer> FailAsync(string errorClass, string? message = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(errorClass);
        return SendAsync(EventTypes.RunFailed, cancellationToken, errorClass: errorClass, message: message);
    }

    /// <summary>Sends <c>run.started</c> (optional: any report but a heartbeat starts the run).</summary>
    public Task<EventsAnswer> StartedAsync(CancellationToken cancellationToken = default) =>
        SendAsync(EventTypes.RunStarted, cancellationToken);

    internal Task<EventsAnswer> SendAsync(string type, CancellationToken cancellationToken, string? stepId = null,
        string? name = null, string? outcome = null, IReadOnlyList<string>? lines = null,
        IReadOnlyDictionary<string, double>? scores = null, string? uri = null, string? sha256 = null, long? bytes = null,
        string? chunkId = null, long? count = null, long? itemsTotal = null, IReadOnlyList<string>? warnings = null,
        string? errorClass = null, string? message = null)
    {
        ThrowIfEnded();
        // Built once: its eventId and occurredAt stay the same through every retry of the pipeline.
        var @event = new EventWire
        {
            Type = type, EventId = LedgerClient.NewId(), OccurredAt = _time.GetUtcNow(),
            StepId = stepId, Name = name, Outcome = outcome, Lines = lines, Scores = scores, Uri = uri, Sha256 = sha256,
            Bytes = bytes, ChunkId = chunkId, Count = count, ItemsTotal = itemsTotal, Warnings = warnings,
            ErrorClass = errorClass, Message = message,
        };
        return SendEventAsync(@event, cancellationToken);
    }

    private async Task<EventsAnswer> SendEventAsync(EventWire @event, CancellationToken cancellationToken)
    {
        // A call still retrying when the run is known to have ended gives up: the run is over.
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _stopped.Token);
        (int Status, LedgerProblem? Problem, byte[] Body, DateTimeOffset? Date) answer;
        try
        {
            answer = await _transport.SendRawAsync(HttpMethod.Post, _eventsPath, _token, @event, linked.Token);
        }
        catch (OperationCanceledException) when (_stopped.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw Termination!.Again();
        }

        if (answer.Problem is { } problem)
        {
            if (problem.Code is ProblemCodes.RunTerminal or ProblemCodes.LeaseExpired or ProblemCodes.LeaseLost)
            {
                throw Stop(new RunTerminatedException(RunId, problem.RunStatus, problem.Code,
                    $"Run '{RunId}' has ended for this worker ({problem.Code}{(problem.RunStatus is null ? "" : ", " + problem.RunStatus)}): stop working on it.",
                    problem));
            }
            throw LedgerTransport.ToException(problem);
        }

        var events = System.Text.Json.JsonSerializer.Deserialize<EventsAnswer>(answer.Body, WireJson.Options)
                     ?? throw new LedgerUnavailableException("The ledger answered an event with an empty body.");
        if (RunStatuses.IsTerminal(events.Status))
        {
            // Finished (succeeded, or failed by its own accounting): nothing more can change it.
            Stop(new RunTerminatedException(RunId, events.Status, null, $"Run '{RunId}' is {events.Status}: stop working on it."));
        }
        return events;
    }

    private RunTerminatedException Stop(RunTerminatedException reason)
    {
        if (Interlocked.CompareExchange(ref _termination, reason, null) is null)
        {
            _log.LogInformation("Run {RunId} ended for worker {Worker}: {Status} ({Code})", RunId, Worker, reason.RunStatus, reason.Code);
            try
            {
                _stopped.Cancel();
            }
            catch (AggregateException e)
            {
                _log.LogWarning(e, "A callback registered on Stopped of run {RunId} threw", RunId);
            }
        }
        return reason;
    }

    private void ThrowIfEnded()
    {
        if (Volatile.Read(ref _termination) is { } ended) throw ended.Again();
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
    }

    internal bool IsEnded => Volatile.Read(ref _termination) is not null;

    private async Task HeartbeatAsync()
    {
        using var loop = CancellationTokenSource.CreateLinkedTokenSource(_disposing.Token, _stopped.Token);
        try
        {
            using var timer = new PeriodicTimer(HeartbeatInterval, _time);
            while (await timer.WaitForNextTickAsync(loop.Token))
            {
                try
                {
                    await SendAsync(EventTypes.Heartbeat, loop.Token);
                }
                catch (RunTerminatedException)
                {
                    return; // Stopped has fired.
                }
                catch (LedgerRefusedException e)
                {
                    // A heartbeat is always well formed: a refusal means this lease cannot be used any more.
                    Stop(new RunTerminatedException(RunId, e.RunStatus, e.Code,
                        $"Run '{RunId}': the ledger refused this worker's heartbeat ({e.Code}): stop working on it.", e.Problem));
                    return;
                }
                catch (LedgerUnavailableException e)
                {
                    _log.LogWarning(e, "Heartbeat of run {RunId} failed through every retry; trying again at the next beat", RunId);
                }
            }
        }
        catch (OperationCanceledException) when (loop.IsCancellationRequested)
        {
            // Disposed or stopped.
        }
        catch (ObjectDisposedException)
        {
            // Disposed between two beats.
        }
    }

    /// <summary>Stops the heartbeats and waits for the loop to end. Does not complete or fail the run:
    /// a run left without completion is marked lost by the ledger when its lease runs out.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _disposing.Cancel();
        try
        {
            await HeartbeatLoop;
        }
        finally
        {
            _disposing.Dispose();
        }
    }
}
