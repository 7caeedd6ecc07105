namespace Ledger.Contract;

public enum RunStatus { Registered, Claimed, Running, Succeeded, Failed, Lost, Cancelled }

public static class RunStatusRules
{
    public static bool IsTerminal(this RunStatus status) => status >= RunStatus.Succeeded;

    public static string Wire(this RunStatus status) => status.ToString().ToLowerInvariant();

    /// <summary>The statuses as the wire spells them.</summary>
    public static readonly IReadOnlyList<string> WireNames = Enum.GetValues<RunStatus>().Select(Wire).ToArray();
}
