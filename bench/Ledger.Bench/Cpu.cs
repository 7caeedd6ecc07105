namespace Ledger.Bench;

/// <summary>
/// CPU time (clock ticks, from /proc) of the ledger process, the bench process, the bench's
/// PostgreSQL cluster (postmaster, its live children and its reaped ones), and the whole machine.
/// On two cores the sum says where a figure's time goes.
/// </summary>
public readonly record struct CpuCounters(long Ledger, long Bench, long Postgres, long MachineBusy, long MachineTotal)
{
    public static CpuCounters operator -(CpuCounters a, CpuCounters b) =>
        new(a.Ledger - b.Ledger, a.Bench - b.Bench, a.Postgres - b.Postgres, a.MachineBusy - b.MachineBusy, a.MachineTotal - b.MachineTotal);

    public static CpuCounters operator +(CpuCounters a, CpuCounters b) =>
        new(a.Ledger + b.Ledger, a.Bench + b.Bench, a.Postgres + b.Postgres, a.MachineBusy + b.MachineBusy, a.MachineTotal + b.MachineTotal);

    public long Other => Math.Max(0, MachineBusy - Ledger - Bench - Postgres);
}

public sealed class CpuProbe(string postgresDataDirectory)
{
    /// <summary>Clock ticks per second of /proc (USER_HZ): 100 on Linux.</summary>
    public const double TicksPerSecond = 100.0;

    public int? LedgerPid { get; set; }
    /// <summary>Further ledger processes (the hot-run figure's other nodes), counted in the ledger column.</summary>
    public IReadOnlyList<int> OtherLedgerPids { get; set; } = [];
    private int? _postmaster;

    public CpuCounters Read()
    {
        _postmaster ??= Postmaster();
        var postgres = 0L;
        if (_postmaster is { } pm)
        {
            postgres = Stat(pm) is { } s ? s.Own + s.Children : 0;
            foreach (var dir in Directory.EnumerateDirectories("/proc"))
            {
                if (!int.TryParse(Path.GetFileName(dir), out var pid) || pid == pm) continue;
                if (Stat(pid) is { } child && child.Parent == pm) postgres += child.Own;
            }
        }
        var ledger = LedgerPid is { } lp && Stat(lp) is { } l ? l.Own : 0;
        foreach (var pid in OtherLedgerPids) ledger += Stat(pid) is { } o ? o.Own : 0;
        var bench = Stat(Environment.ProcessId) is { } b ? b.Own : 0;
        var (busy, total) = Machine();
        return new CpuCounters(ledger, bench, postgres, busy, total);
    }

    private int? Postmaster()
    {
        try
        {
            var first = File.ReadLines(Path.Combine(postgresDataDirectory, "postmaster.pid")).FirstOrDefault();
            return int.TryParse(first, out var pid) ? pid : null;
        }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    private static (long Own, long Children, int Parent)? Stat(int pid)
    {
        try
        {
            var text = File.ReadAllText($"/proc/{pid}/stat");
            // Fields after the command name, which is in parentheses and may hold spaces.
            var f = text[(text.LastIndexOf(')') + 2)..].Split(' ');
            // f[0] = state (field 3): ppid is field 4, utime 14, stime 15, cutime 16, cstime 17.
            return (long.Parse(f[11]) + long.Parse(f[12]), long.Parse(f[13]) + long.Parse(f[14]), int.Parse(f[1]));
        }
        catch (IOException) { return null; }
        catch (FormatException) { return null; }
        catch (IndexOutOfRangeException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    private static (long Busy, long Total) Machine()
    {
        var line = File.ReadLines("/proc/stat").First();
        var v = line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).Select(long.Parse).ToArray();
        // user nice system idle iowait irq softirq steal
        var idle = v[3] + v[4];
        var total = v.Take(8).Sum();
        return (total - idle, total);
    }
}
