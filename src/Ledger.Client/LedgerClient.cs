using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Ledger.Client;

/// <summary>
/// The ledger as a worker or an orchestrator sees it. Register it with
/// <c>services.AddLedgerClient(o => { o.BaseAddress = ...; o.Key = ...; })</c>.
/// Every call goes through the resilience pipeline of the named HttpClient: retryable answers and
/// dropped connections are retried with the same request, <c>retryable: false</c> answers throw
/// <see cref="LedgerRefusedException"/> at once.
/// </summary>
public sealed class LedgerClient
{
    /// <summary>The name of the HttpClient in <c>IHttpClientFactory</c>.</summary>
    public const string HttpClientName = "RunLedger.Client";

    private readonly LedgerTransport _transport;
    private readonly LedgerClientOptions _options;
    private readonly TimeProvider _time;
    private readonly ILoggerFactory _loggers;

    public LedgerClient(IHttpClientFactory factory, IOptions<LedgerClientOptions> options, ILoggerFactory? loggers = null,
        TimeProvider? time = null)
    {
        _transport = new LedgerTransport(factory);
        _options = options.Value;
        _loggers = loggers ?? NullLoggerFactory.Instance;
        _time = time ?? TimeProvider.System;
    }

    private string Key => _options.Key ?? throw new InvalidOperationException("LedgerClientOptions.Key is not set.");

    /// <summary>A new identifier: sortable by creation time, unique, and valid as a run, event, claim or step id.</summary>
    public static string NewId() => Guid.CreateVersion7().ToString("N");

    /// <summary>
    /// Registers a run (admin key) and returns its id. When <paramref name="registration"/> has no
    /// runId, the client generates one before the first attempt, so that a retry after a dropped
    /// connection registers the same run, never a second one.
    /// </summary>
    public async Task<string> RegisterAsync(RunRegistration? registration = null, CancellationToken cancellationToken = default)
    {
        var body = (registration ?? new RunRegistration()) is var r && r.RunId is null ? r with { RunId = NewId() } : r;
        var answer = await _transport.SendAsync<RegisteredWire>(HttpMethod.Post, "api/runs", Key, body, cancellationToken);
        return answer.RunId;
    }

    /// <summary>
    /// Takes the run's lease and starts a session that heartbeats in the background until it is
    /// disposed or the run ends. The claim carries a claimId generated here, so that a retry after a
    /// dropped connection answers the same lease instead of <c>409 lease-held</c>.
    /// </summary>
    public async Task<RunSession> ClaimAsync(string runId, string? worker = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(runId);
        var claim = new ClaimWire(worker ?? _options.Worker, NewId());
        var (lease, ledgerNow) = await _transport.SendWithDateAsync<LeaseWire>(HttpMethod.Post,
            $"api/runs/{Uri.EscapeDataString(runId)}/claim", Key, claim, cancellationToken);
        var requirements = new RunRequirements(
            lease.RequiredScores ?? [], lease.RequiredOutputs ?? [], lease.ExpectedItems,
            Known: lease.RequiredScores is not null || lease.RequiredOutputs is not null);
        var interval = _options.HeartbeatInterval ?? HeartbeatFor(lease, ledgerNow);
        return RunSession.Start(runId, claim, lease.LeaseToken, lease.LeaseExpiresAt, requirements, interval, _transport, _time,
            _loggers.CreateLogger<RunSession>());
    }

    /// <summary>
    /// A third of the lease: two heartbeats can be lost before the lease runs out. The lease's
    /// length is <c>leaseSeconds</c> when the claim says it, else its expiry measured from the
    /// ledger's own clock (the Date header), so that a worker whose clock is off still beats in time.
    /// </summary>
    private TimeSpan HeartbeatFor(LeaseWire lease, DateTimeOffset? ledgerNow)
    {
        var length = lease.LeaseSeconds is { } seconds
            ? TimeSpan.FromSeconds(seconds)
            : lease.LeaseExpiresAt - (ledgerNow ?? _time.GetUtcNow());
        // The Date header has whole seconds and a server may refresh it once a second, so a lease
        // measured from it can seem up to two seconds longer than it is.
        if (lease.LeaseSeconds is null && ledgerNow is not null && length > TimeSpan.FromSeconds(6)) length -= TimeSpan.FromSeconds(2);
        var third = length / 3;
        return third < TimeSpan.FromSeconds(1) ? TimeSpan.FromSeconds(1) : third;
    }

    /// <summary>Cancels a live run (admin key). A worker holding it learns at its next call or heartbeat.</summary>
    public async Task<string> CancelAsync(string runId, string? reason = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(runId);
        var answer = await _transport.SendAsync<System.Text.Json.JsonElement>(HttpMethod.Post,
            $"api/runs/{Uri.EscapeDataString(runId)}/cancel", Key, new CancelWire(reason), cancellationToken);
        return answer.TryGetProperty("status", out var status) ? status.GetString() ?? RunStatuses.Cancelled : RunStatuses.Cancelled;
    }

    /// <summary>The run as the ledger shows it (admin or read key).</summary>
    public async Task<RunState> GetRunAsync(string runId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(runId);
        var json = await _transport.SendAsync<System.Text.Json.JsonElement>(HttpMethod.Get,
            $"api/runs/{Uri.EscapeDataString(runId)}", Key, null, cancellationToken);
        return new RunState
        {
            RunId = json.GetProperty("runId").GetString()!,
            Status = json.GetProperty("status").GetString()!,
            Reason = json.TryGetProperty("reason", out var reason) ? reason.GetString() : null,
            Version = json.TryGetProperty("version", out var version) ? version.GetInt64() : 0,
            Missing = json.TryGetProperty("missing", out var missing)
                ? missing.EnumerateArray().Select(m => m.GetString()!).ToList() : [],
            Scores = json.TryGetProperty("scores", out var scores)
                ? scores.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetDouble()) : new Dictionary<string, double>(),
            ErrorClass = json.TryGetProperty("errorClass", out var errorClass) ? errorClass.GetString() : null,
            Warnings = json.TryGetProperty("warnings", out var warnings)
                ? warnings.EnumerateArray().Select(w => w.GetString()!).ToList() : [],
            Json = json.Clone(),
        };
    }
}
