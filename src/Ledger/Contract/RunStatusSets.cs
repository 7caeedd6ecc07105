namespace Ledger.Contract;

/// <summary>
/// The statuses that are asked for together, each set defined once: the queries (the janitor, the
/// stuck filter), the KPIs, the API description and the console take them from here.
/// </summary>
public static class RunStatusSets
{
    /// <summary>The verdicts (succeeded, failed, lost, cancelled), as <see cref="RunStatusRules.IsTerminal"/> defines them.</summary>
    public static readonly IReadOnlyList<RunStatus> Terminal = Enum.GetValues<RunStatus>().Where(s => s.IsTerminal()).ToArray();

    /// <summary>The verdicts as a sentence names them ("succeeded, failed, lost or cancelled"), for messages.</summary>
    public static readonly string TerminalInWords =
        string.Join(", ", Terminal.SkipLast(1).Select(s => s.Wire())) + " or " + Terminal[^1].Wire();

    /// <summary>
    /// Claimed or running: a worker holds the run's lease, or held it until it expired. The janitor marks
    /// such a run once its lease is over; the stuck filter looks for them without a recent heartbeat.
    /// </summary>
    public static bool IsLive(this RunStatus status) => status is RunStatus.Claimed or RunStatus.Running;

    /// <summary>The live statuses, as <see cref="IsLive"/> defines them.</summary>
    public static readonly IReadOnlyList<RunStatus> Live = Enum.GetValues<RunStatus>().Where(IsLive).ToArray();
}
