using System.Globalization;
using System.Text;

namespace Ledger.Bench;

/// <summary>Everything measured in one run, and the markdown report made of it.</summary>
public sealed class Results
{
    private readonly Dictionary<string, Measurement> _measurements = new();
    public Dictionary<string, WriteCounters> Writes { get; } = new();
    public Dictionary<string, CpuCounters> Cpu { get; } = new();
    public List<string> Notes { get; } = [];
    public PhaseTimes DecidePhases { get; } = new();
    public PhaseTimes DecidePhasesSolo { get; } = new();
    public PhaseTimes DecidePhasesBatch { get; } = new();
    public Dictionary<string, List<string>> DecisionSql { get; } = new();
    public Recorder ControlCalls { get; } = new();
    public Machine? Machine { get; set; }
    public string Durability { get; set; } = "";
    /// <summary>synchronous_commit is on (every acknowledged commit flushed): the figures are only comparable then.</summary>
    public bool DurabilityHolds { get; set; } = true;
    /// <summary>Tables created UNLOGGED in the bench database (none expected).</summary>
    public List<string> UnloggedTables { get; } = [];
    /// <summary>The connection strings (no password) the ledger used (its shipped defaults merged in) and the anchors.</summary>
    public (string Ledger, string Anchors)? Connections { get; set; }
    /// <summary>Per figure: the longest wait for the async daemon to catch up before its window closed, and how many waits timed out.</summary>
    public Dictionary<string, (TimeSpan Longest, int TimedOut)> CatchUps { get; } = new();

    public void AddCatchUp(string key, DaemonCatchUp.Wait wait)
    {
        var (longest, timedOut) = CatchUps.GetValueOrDefault(key);
        CatchUps[key] = (wait.Waited > longest ? wait.Waited : longest, timedOut + (wait.TimedOut ? 1 : 0));
    }
    /// <summary>Each ledger process's peak resident memory (VmHWM), the largest of its samples, and how many were taken.</summary>
    public List<(string Process, long PeakKb, long SampledPeakKb, long Samples)> Peaks { get; } = [];
    public long PeakRssKb => Peaks.Count == 0 ? 0 : Peaks.Max(p => p.PeakKb);
    public SoakResult? Soak { get; set; }
    public RetentionResult? Retention { get; set; }

    public void AddPeak(string process, LedgerProcess ledger) => AddPeak(process, ledger.PeakRssKb, ledger.SampledPeakRssKb, ledger.Samples);
    public void AddPeak(string process, long peakKb, long sampledKb, long samples) => Peaks.Add((process, peakKb, sampledKb, samples));
    public IReadOnlyDictionary<string, long> PeakRssByPhaseKb { get; set; } = new Dictionary<string, long>();
    public long SeededRuns { get; set; }
    /// <summary>The seeded board as the seeding computed it.</summary>
    public ExpectedBoard? Board { get; set; }
    public CatchUpResult? CatchUp { get; set; }
    public CpuCounters? CatchUpCpu { get; set; }
    public LeaderboardProfile? LeaderboardProfile { get; set; }
    /// <summary>Board under load: how long after its acknowledgement each probe verdict was first seen at rank 1.</summary>
    public List<double> VisibleAfterMs { get; } = [];
    public int VisibilityProbes { get; set; }
    public int VisibilityUnseen { get; set; }
    /// <summary>The seeded verdicts' time range, which ?at= reads pick their times from.</summary>
    public (DateTimeOffset From, DateTimeOffset To)? SeededTimes { get; set; }
    public long RunsAtReads { get; set; }
    public long RebuildEvents { get; set; }
    /// <summary>Events of the long run the history figure read.</summary>
    public long HistoryEvents { get; set; }
    public long RebuildAllocatedBytes { get; set; }
    public TimeSpan Total { get; set; }
    public List<StartSample> Starts { get; set; } = [];

    public Measurement this[string key] => _measurements[key];

    public Measurement Get(string key, string title)
    {
        if (!_measurements.TryGetValue(key, out var m)) _measurements[key] = m = new Measurement(key, title);
        return m;
    }

    public bool Has(string key) => _measurements.TryGetValue(key, out var m) && m.HasSamples;

    public void AddCpu(string key, CpuCounters delta) =>
        Cpu[key] = Cpu.TryGetValue(key, out var sum) ? sum + delta : delta;

    public void AddWrites(string key, WriteCounters delta) =>
        Writes[key] = Writes.TryGetValue(key, out var sum) ? sum + delta : delta;

    /// <summary>Requests of a figure that did not apply their event, by HTTP status, over all its repetitions.</summary>
    public Dictionary<string, Outcomes> Failed { get; } = new();
    /// <summary>Lines of the ledger processes' logs that mention a deadlock, written during a figure's repetitions.</summary>
    public Dictionary<string, long> DeadlockLines { get; } = new();
    /// <summary>Deadlocks and ERROR lines in PostgreSQL's server log during a figure's repetitions.</summary>
    public Dictionary<string, (long Deadlocks, long Errors)> ServerLog { get; } = new();

    public Outcomes OutcomesOf(string key)
    {
        lock (Failed)
        {
            if (!Failed.TryGetValue(key, out var o)) Failed[key] = o = new Outcomes();
            return o;
        }
    }

    public void AddDeadlockLines(string key, long lines) => DeadlockLines[key] = DeadlockLines.GetValueOrDefault(key) + lines;

    public void AddServerLog(string key, (long Deadlocks, long Errors) counts)
    {
        var (d, e) = ServerLog.GetValueOrDefault(key);
        ServerLog[key] = (d + counts.Deadlocks, e + counts.Errors);
    }

    /// <summary>CPU microseconds per event of one process column over all repetitions of a figure; NaN when not measured.</summary>
    public double CpuPerEvent(string key, Func<CpuCounters, long> column)
    {
        if (!Has(key) || !Cpu.TryGetValue(key, out var c)) return double.NaN;
        var events = this[key].Samples.Sum(s => s.Events);
        return events == 0 ? double.NaN : column(c) / CpuProbe.TicksPerSecond * 1e6 / events;
    }

    private sealed record Row(string Figure, double Value, string Unit, string? Baseline, double? BaselineValue,
        double? Ratio, string Target, bool? Met);

    private List<Row> Rows(BenchOptions o)
    {
        var rows = new List<Row>();
        double Eps(string k) => Has(k) ? this[k].MedianEventsPerSecond : double.NaN;
        double? Ratio(double a, double b) => double.IsNaN(a) || double.IsNaN(b) || b == 0 ? null : a / b;

        var single = Eps("ledger.single");
        var rowTx = Eps("base.single");
        var multi = Eps("base.multi");
        var copy = Eps("base.copy");
        var batch = Eps("ledger.batch");
        var quick1 = Eps("anchor.quick1");
        var quick100 = Eps("anchor.quick100");
        // Targets: PRODUCT.md, "Service levels" (two anchors, both measured in this run).
        var singleVsMarten = Ratio(single, quick1);
        var singleVsRaw = Ratio(single, rowTx);
        rows.Add(new("Ingestion, single-event requests", single, "events/s", "bare Marten Quick append, 1 event per tx", quick1, singleVsMarten,
            "≥ 1.0 × anchor", singleVsMarten >= 1.0));
        rows.Add(new("Ingestion, single-event requests (vs raw INSERT)", single, "events/s", "raw INSERT, 1 row per tx", rowTx, singleVsRaw,
            "≥ 0.20 × baseline", singleVsRaw >= 0.20));
        if (Has("ledger.single"))
        {
            var l = this["ledger.single"];
            var b = Has("base.single") ? this["base.single"] : null;
            rows.Add(new("Single-event request latency p50", l.MedianP50, "ms", "INSERT p50", b?.MedianP50, Ratio(l.MedianP50, b?.MedianP50 ?? double.NaN), "–", null));
            rows.Add(new("Single-event request latency p95", l.MedianP95, "ms", "INSERT p95", b?.MedianP95, Ratio(l.MedianP95, b?.MedianP95 ?? double.NaN), "–", null));
            rows.Add(new("Single-event request latency p99", l.MedianP99, "ms", "INSERT p99", b?.MedianP99, Ratio(l.MedianP99, b?.MedianP99 ?? double.NaN), "≤ 50 ms", l.MedianP99 <= 50));
        }
        // What one single event costs each process: PostgreSQL's is what bounds every node together.
        if (Has("ledger.single"))
        {
            var ledgerCpu = CpuPerEvent("ledger.single", c => c.Ledger);
            var pgCpu = CpuPerEvent("ledger.single", c => c.Postgres);
            var anchorPgCpu = CpuPerEvent("anchor.quick1", c => c.Postgres);
            var basePgCpu = CpuPerEvent("base.single", c => c.Postgres);
            rows.Add(new("CPU per event, ledger process (single-event requests)", ledgerCpu, "µs", null, null, null, "≤ 300 µs", ledgerCpu <= 300));
            rows.Add(new("CPU per event, PostgreSQL (single-event requests)", pgCpu, "µs", "bare Marten Quick append, 1 event per tx: PostgreSQL", anchorPgCpu,
                Ratio(pgCpu, anchorPgCpu), "≤ 400 µs", pgCpu <= 400));
            rows.Add(new("CPU per event, PostgreSQL, raw INSERT 1 row per tx (the physical limit)", basePgCpu, "µs", null, null, null, "–", null));
        }

        if (Has("long.single"))
        {
            var l = this["long.single"];
            var f = Has("fresh.single") ? this["fresh.single"] : null;
            var events = o.Quick && o.LongRunEvents < 10_000
                ? $"{o.LongRunEvents:N0} events (quick mode; full mode: 10,000)"
                : $"{o.LongRunEvents:N0} events";
            var ratio = Ratio(l.MedianEventsPerSecond, f?.MedianEventsPerSecond ?? double.NaN);
            rows.Add(new($"Single-event requests on runs already holding {events}", l.MedianEventsPerSecond, "events/s", "same on fresh runs", f?.MedianEventsPerSecond, ratio,
                "≥ 0.90 × fresh", ratio is null ? null : ratio >= 0.90));
            rows.Add(new("Long runs: single-event request latency p50", l.MedianP50, "ms", "fresh runs p50", f?.MedianP50, Ratio(l.MedianP50, f?.MedianP50 ?? double.NaN), "–", null));
            rows.Add(new("Long runs: single-event request latency p99", l.MedianP99, "ms", "fresh runs p99", f?.MedianP99, Ratio(l.MedianP99, f?.MedianP99 ?? double.NaN), "–", null));
        }

        var oneNode = Eps("nodes.1");
        foreach (var n in o.NodeCounts.Where(n => Has($"nodes.{n}")))
        {
            var key = $"nodes.{n}";
            var h = this[key];
            var nodes = $"{n} node{(n == 1 ? "" : "s")}";
            var ratio = n == 1 ? null : Ratio(h.MedianEventsPerSecond, oneNode);
            var (throughputTarget, throughputMet) = n == 2 ? ("≥ 0.50 × 1 node", ratio is null ? (bool?)null : ratio >= 0.50) : ("–", (bool?)null);
            rows.Add(new($"Hot run ({o.Workers} workers, one lease), {nodes}", h.MedianEventsPerSecond, "events/s", n == 1 ? null : "1 node", n == 1 ? null : oneNode, ratio,
                throughputTarget, throughputMet));
            rows.Add(new($"Hot run, {nodes}: request latency p50", h.MedianP50, "ms", null, null, null, "–", null));
            rows.Add(new($"Hot run, {nodes}: request latency p99", h.MedianP99, "ms", null, null, null, n == 2 ? "≤ 2,000 ms" : "–", n == 2 ? h.MedianP99 <= 2000 : null));
            var failed = Failed.GetValueOrDefault(key);
            rows.Add(new($"Hot run, {nodes}: requests not applied, all repetitions (by status: {failed?.ToString() ?? "none"})", failed?.Total ?? 0, "requests", null, null, null, "–", null));
            var (pgDeadlocks, pgErrors) = ServerLog.GetValueOrDefault(key);
            rows.Add(new($"Hot run, {nodes}: node log lines mentioning a deadlock, all repetitions (PostgreSQL log: {pgDeadlocks:N0} deadlocks, {pgErrors:N0} ERROR lines)",
                DeadlockLines.GetValueOrDefault(key), "lines", null, null, null, "–", null));
        }

        var batchVsMarten = Ratio(batch, quick100);
        rows.Add(new($"Ingestion, batches of {o.BatchSize}", batch, "events/s", $"bare Marten Quick append, {o.BatchSize} events per tx", quick100, batchVsMarten,
            "≥ 0.60 × anchor", batchVsMarten >= 0.60));
        rows.Add(new($"Ingestion, batches of {o.BatchSize} (vs raw multi-row INSERT)", batch, "events/s", $"raw multi-row INSERT of {o.BatchSize}", multi, Ratio(batch, multi), "–", null));
        rows.Add(new($"Ingestion, batches of {o.BatchSize} (vs COPY)", batch, "events/s", $"raw binary COPY of {o.BatchSize}", copy, Ratio(batch, copy), "–", null));
        if (Has("anchor.quick1"))
        {
            rows.Add(new("Anchor: bare Marten Quick append, 1 event per tx (in-process, with the ingestion)", quick1, "events/s", "raw INSERT, 1 row per tx", rowTx, Ratio(quick1, rowTx), "–", null));
        }
        if (Has("anchor.quick100"))
        {
            rows.Add(new($"Anchor: bare Marten Quick append, {o.BatchSize} events per tx (in-process, with the ingestion)", quick100, "events/s",
                $"raw multi-row INSERT of {o.BatchSize}", multi, Ratio(quick100, multi), "–", null));
        }
        if (Has("ledger.batch"))
        {
            var l = this["ledger.batch"];
            var b = Has("base.multi") ? this["base.multi"] : null;
            rows.Add(new($"Batch request latency p50", l.MedianP50, "ms", "multi-row INSERT p50", b?.MedianP50, Ratio(l.MedianP50, b?.MedianP50 ?? double.NaN), "–", null));
            rows.Add(new($"Batch request latency p99", l.MedianP99, "ms", "multi-row INSERT p99", b?.MedianP99, Ratio(l.MedianP99, b?.MedianP99 ?? double.NaN), "–", null));
        }

        foreach (var (key, title, baseKey, baseName) in new[]
                 {
                     ("marten.append1.rich", "Marten append, Rich, 1 event per tx (in-process)", "base.single", "raw INSERT, 1 row per tx"),
                     ("marten.append1.quick", "Marten append, Quick, 1 event per tx (in-process)", "base.single", "raw INSERT, 1 row per tx"),
                     ("marten.append100.rich", $"Marten append, Rich, {o.BatchSize} events per tx (in-process)", "base.multi", $"raw multi-row INSERT of {o.BatchSize}"),
                     ("marten.append100.quick", $"Marten append, Quick, {o.BatchSize} events per tx (in-process)", "base.multi", $"raw multi-row INSERT of {o.BatchSize}"),
                     ("marten.decide1.rich", "Service write path, Rich, 1 event per tx (in-process, no HTTP)", "base.single", "raw INSERT, 1 row per tx"),
                     ("marten.decide1.quick", "Service write path, Quick, 1 event per tx (in-process, no HTTP)", "base.single", "raw INSERT, 1 row per tx"),
                     ("marten.decide100.rich", $"Service write path, Rich, {o.BatchSize} events per tx (in-process, no HTTP)", "base.multi", $"raw multi-row INSERT of {o.BatchSize}"),
                     ("marten.decide100.quick", $"Service write path, Quick, {o.BatchSize} events per tx (in-process, no HTTP)", "base.multi", $"raw multi-row INSERT of {o.BatchSize}"),
                 })
        {
            if (!Has(key)) continue;
            rows.Add(new(title, Eps(key), "events/s", baseName, Eps(baseKey), Ratio(Eps(key), Eps(baseKey)), "–", null));
        }

        if (Has("rebuild"))
        {
            var r = Eps("rebuild");
            rows.Add(new($"Projection rebuild (Run, {RebuildEvents:N0} events)", r, "events/s", null, null, null, "≥ 30,000 events/s", r >= 30_000));
        }
        if (Has("reads.get"))
        {
            var g = this["reads.get"];
            rows.Add(new($"GET /api/runs/{{id}} p50 ({RunsAtReads:N0} runs, {o.ReadConcurrency} readers)", g.MedianP50, "ms", null, null, null, "–", null));
            rows.Add(new($"GET /api/runs/{{id}} p99 ({RunsAtReads:N0} runs, {o.ReadConcurrency} readers)", g.MedianP99, "ms", null, null, null, "–", null));
        }
        var boardRuns = Board is { } b0 ? $"{b0.SucceededRuns + b0.FailedRuns:N0} runs on the board, {b0.Participants:N0} participants" : $"{SeededRuns:N0} runs";
        var leaderboards = o.LeaderboardReaders.Where(n => Has($"reads.board.{n}")).ToList();
        foreach (var n in leaderboards)
        {
            var l = this[$"reads.board.{n}"];
            var readers = $"{n} reader{(n == 1 ? "" : "s")}";
            rows.Add(new($"Leaderboard read p50 ({boardRuns}, {readers})", l.MedianP50, "ms", null, null, null, "–", null));
            rows.Add(new($"Leaderboard read p99 ({boardRuns}, {readers})", l.MedianP99, "ms", null, null, null, "≤ 20 ms at 100k runs", l.MedianP99 <= 20));
        }
        if (leaderboards.Count == 0)
        {
            rows.Add(new($"Leaderboard read p99 ({boardRuns})", double.NaN, "ms", null, null, null, "≤ 20 ms at 100k runs", null));
        }
        foreach (var n in leaderboards.Where(n => Has($"reads.board.live.{n}")))
        {
            var l = this[$"reads.board.live.{n}"];
            var readers = $"{n} reader{(n == 1 ? "" : "s")}";
            rows.Add(new($"Leaderboard read p50 while runs finish on the board ({boardRuns}, {readers})", l.MedianP50, "ms", null, null, null, "–", null));
            rows.Add(new($"Leaderboard read p99 while runs finish on the board ({boardRuns}, {readers})", l.MedianP99, "ms", null, null, null,
                "≤ 20 ms at 100k runs", l.MedianP99 <= 20));
            if (Has($"finishes.live.{n}"))
            {
                var f = this[$"finishes.live.{n}"];
                rows.Add(new($"Runs finishing on the board during those reads ({readers}; completion requests answered, errors {f.Errors})",
                    f.MedianOperationsPerSecond, "runs/s", null, null, null, $"{o.FinishRate} runs/s", f.MedianOperationsPerSecond >= 0.95 * o.FinishRate && f.Errors == 0));
            }
        }
        if (VisibilityProbes > 0)
        {
            var worst = VisibleAfterMs.Count == 0 ? double.NaN : VisibleAfterMs.Max();
            rows.Add(new($"New verdict visible at rank 1 after its acknowledgement, worst of {VisibilityProbes} probes (median {Measurement.Median(VisibleAfterMs):0} ms; never seen within 10 s: {VisibilityUnseen})",
                worst, "ms", null, null, null, "≤ 1,000 ms", VisibilityUnseen == 0 && worst <= 1000));
        }
        foreach (var n in leaderboards.Where(n => Has($"reads.board.asof.{n}")))
        {
            var l = this[$"reads.board.asof.{n}"];
            var readers = $"{n} reader{(n == 1 ? "" : "s")}";
            rows.Add(new($"Leaderboard as of a time (?at=) p50 ({boardRuns}, {readers})", l.MedianP50, "ms", null, null, null, "–", null));
            rows.Add(new($"Leaderboard as of a time (?at=) p99 ({boardRuns}, {readers})", l.MedianP99, "ms", null, null, null, "≤ 50 ms at 100k runs", l.MedianP99 <= 50));
        }
        // KPI reads from the kept counters (KpiFigures): p99 at the seeded runs, and against the same read at the few runs before the seeding.
        if (Has(KpiFigures.Many))
        {
            var k = this[KpiFigures.Many];
            var few = Has(KpiFigures.Few) ? this[KpiFigures.Few] : null;
            var flat = Ratio(k.MedianP99, few?.MedianP99 ?? double.NaN);
            rows.Add(new($"KPI read p99, {k.Title}", k.MedianP99, "ms", null, null, null, "≤ 20 ms at 100k runs", k.MedianP99 <= 20));
            rows.Add(new($"KPI read p99 at {RunsAtReads:N0} runs vs few runs", k.MedianP99, "ms", few?.Title, few?.MedianP99, flat,
                "≤ 2 × (flat)", flat is null ? null : flat <= 2));
        }
        if (CatchUp is { } c)
        {
            rows.Add(new(c.CaughtUp
                    ? $"Standings catch-up after seeding ({c.VerdictsToFold:N0} verdicts in {c.EventsToFold:N0} events still to fold)"
                    : $"Standings catch-up after seeding: NOT finished, {c.LagAtEnd:N0} events behind at the limit",
                c.Waited.TotalSeconds, "s", null, null, null, "–", null));
        }
        if (Starts.Count > 0)
        {
            rows.Add(new($"Start-up: process start to GET /health/live (median of {Starts.Count})", Measurement.Median(Starts.Select(s => s.LiveSeconds).ToList()),
                "s", null, null, null, "–", null));
            rows.Add(new($"Ledger RSS after start and {o.HttpDuration.TotalSeconds:0.#} s of load (median of {Starts.Count})",
                Measurement.Median(Starts.Select(s => s.RssAfterLoadMb).ToList()), "MB", null, null, null, "–", null));
        }
        foreach (var (key, shortKey, what) in new[]
                 {
                     (HistoryFigures.PageKey, HistoryFigures.ShortPageKey, $"History page of {HistoryFigures.PageSize:N0} at a random version"),
                     (HistoryFigures.StateKey, HistoryFigures.ShortStateKey, "State at a random version"),
                 })
        {
            if (!Has(key)) continue;
            var l = this[key];
            var s = Has(shortKey) ? this[shortKey] : null;
            var run = $"run of {HistoryEvents:N0} events, {o.ReadConcurrency} readers";
            var baseline = $"run of {HistoryFigures.ShortRunEvents:N0} events";
            rows.Add(new($"{what} p50 ({run})", l.MedianP50, "ms", $"{baseline} p50", s?.MedianP50, Ratio(l.MedianP50, s?.MedianP50 ?? double.NaN), "–", null));
            rows.Add(new($"{what} p99 ({run})", l.MedianP99, "ms", $"{baseline} p99", s?.MedianP99, Ratio(l.MedianP99, s?.MedianP99 ?? double.NaN), "≤ 100 ms", l.MedianP99 <= 100));
            var cpu = CpuPerEvent(key, c => c.Ledger + c.Postgres) / 1000;
            var shortCpu = CpuPerEvent(shortKey, c => c.Ledger + c.Postgres) / 1000;
            rows.Add(new($"{what}: CPU per read, ledger + PostgreSQL", cpu, "ms", baseline, shortCpu, Ratio(cpu, shortCpu), "–", null));
        }
        if (Soak is { } soak)
        {
            var p = soak.Plan;
            var from = p.GrowthFrom.TotalMinutes;
            var to = soak.End?.At.TotalMinutes ?? double.NaN;
            var title = $"Soak ({p.Duration.TotalMinutes:0.#} min at {p.EventsPerSecond:0} events/s, {p.RunReadsPerSecond + p.OtherReadsPerSecond:0} reads/s, janitor, webhooks)";
            rows.Add(new($"{title}: RSS at minute {from:0}", (soak.GrowthStart?.Memory.RssKb ?? 0) / 1024.0, "MB", null, null, null, "–", null));
            rows.Add(new($"{title}: RSS at minute {to:0.#}", (soak.End?.Memory.RssKb ?? 0) / 1024.0, "MB", null, null, null, "–", null));
            rows.Add(new($"Soak: RSS growth, minute {from:0} to minute {to:0.#} (GC heap: {Num(soak.Growth(x => x.GcHeapBytes))} %)", soak.RssGrowthPercent, "%",
                null, null, null, "≤ 10 %", soak.RssGrowthPercent <= 10));
            rows.Add(new("Soak: RSS peak of its ledger process", soak.PeakKb / 1024.0, "MB", null, null, null, "≤ 300 MB", soak.PeakKb / 1024.0 <= 300));
            rows.Add(new("Soak: worker events applied per second", soak.AchievedEventsPerSecond, "events/s", "requested", p.EventsPerSecond,
                soak.AchievedEventsPerSecond / p.EventsPerSecond, "≥ 0.95 × requested", soak.AchievedEventsPerSecond >= 0.95 * p.EventsPerSecond));
            rows.Add(new($"Soak: unexpected answers and janitor misses ({soak.Unexpected})", soak.Errors, "requests", null, null, null, "0", soak.Errors == 0));
        }
        if (Retention is { } retention)
        {
            foreach (var (figure, value, unit, target, met) in RetentionFigures.Rows(retention)) rows.Add(new(figure, value, unit, null, null, null, target, met));
        }
        if (PeakRssKb > 0)
        {
            var mb = PeakRssKb / 1024.0;
            var peak = Peaks.MaxBy(p => p.PeakKb);
            rows.Add(new($"Ledger RSS, peak of any ledger process during the run ({peak.Process}; VmHWM)", mb, "MB", null, null, null, "≤ 300 MB", mb <= 300));
        }
        // A figure that was not measured (e.g. left out by --only) meets no target and misses none.
        return rows.Select(r => double.IsNaN(r.Value) ? r with { Met = null } : r).ToList();
    }

    public string Markdown(BenchOptions o)
    {
        var sb = new StringBuilder();
        var mode = o.Quick ? "quick" : "full";
        sb.AppendLine($"# Run Ledger benchmark ({mode} mode)");
        sb.AppendLine();
        sb.AppendLine(Machine?.Line ?? "Machine: unknown");
        sb.AppendLine();
        sb.AppendLine($"Durability: {Durability}. Concurrency: {o.Workers} workers/connections/sessions. " +
                      $"Every figure is the median of {o.Repetitions} repetitions (rebuild: {o.RebuildRepetitions}); " +
                      $"ratios are to the baseline measured in the same run, interleaved with the ledger's repetitions. Total time {Total.TotalSeconds:0} s.");
        sb.AppendLine();
        if (!DurabilityHolds) sb.AppendLine("**synchronous_commit is not on: these figures are not comparable with the service levels.**").AppendLine();
        sb.AppendLine($"Unlogged tables in the bench database: {(UnloggedTables.Count == 0 ? "none" : "**" + string.Join(", ", UnloggedTables) + "** (the figures are not comparable)")}.");
        if (Connections is { } c)
        {
            sb.AppendLine();
            sb.AppendLine($"Connections: the ledger `{c.Ledger}` (given the bench's plain string, it merges its shipped defaults in); " +
                          $"the anchors, raw Npgsql and bare Marten, `{c.Anchors}`.");
        }
        if (CatchUps.Count > 0)
        {
            var (key, longest) = CatchUps.MaxBy(kv => kv.Value.Longest) is var worst ? (worst.Key, worst.Value.Longest) : default;
            var timedOut = CatchUps.Where(kv => kv.Value.TimedOut > 0).Select(kv => $"{(Has(kv.Key) ? this[kv.Key].Title : kv.Key)} ({kv.Value.TimedOut})").ToList();
            sb.AppendLine();
            sb.AppendLine("CPU and WAL per event count all the work the events cause: each window closes once the service's async daemon " +
                          "(standings projection, webhook relay) has caught up with the last event committed in it; " +
                          $"the longest wait was {longest.TotalMilliseconds:N0} ms ({(Has(key) ? this[key].Title : key)}), " +
                          (timedOut.Count == 0 ? "none timed out (30 s)." : $"**timed out (30 s)**: {string.Join(", ", timedOut)}."));
        }
        sb.AppendLine();
        sb.AppendLine("| figure | median | unit | baseline | baseline median | ratio | target | met? |");
        sb.AppendLine("|---|---:|---|---|---:|---:|---|---|");
        var rows = Rows(o);
        foreach (var r in rows)
        {
            var value = r.Unit is "requests" or "lines" ? r.Value.ToString("N0", CultureInfo.InvariantCulture) : Num(r.Value);
            sb.AppendLine($"| {r.Figure} | {value} | {r.Unit} | {r.Baseline ?? "–"} | {Num(r.BaselineValue)} | {Ratio(r.Ratio)} | {r.Target} | {Met(r)} |");
        }
        sb.AppendLine();

        AppendDetails(sb, o);
        sb.AppendLine();
        sb.AppendLine(Summary(rows));
        return sb.ToString();
    }

    private static string Met(Row r) => r.Met switch
    {
        true => "yes",
        false => "**no**",
        null when r.Target != "–" => "not measured",
        _ => "–",
    };

    private string Summary(List<Row> rows)
    {
        string Part(string name, Row? r, Func<Row, string> show) => r is null ? $"{name}: not measured" : $"{name} {show(r)}";
        var single = rows.FirstOrDefault(r => r.Figure.StartsWith("Ingestion, single", StringComparison.Ordinal));
        var p99 = rows.FirstOrDefault(r => r.Figure.StartsWith("Single-event request latency p99", StringComparison.Ordinal));
        var batch = rows.FirstOrDefault(r => r.Figure.StartsWith("Ingestion, batches", StringComparison.Ordinal));
        var copy = rows.FirstOrDefault(r => r.Figure.Contains("(vs COPY)", StringComparison.Ordinal));
        var rebuild = rows.FirstOrDefault(r => r.Figure.StartsWith("Projection rebuild", StringComparison.Ordinal));
        var rss = rows.FirstOrDefault(r => r.Figure.StartsWith("Ledger RSS", StringComparison.Ordinal));
        var boards = rows.Where(r => r.Figure.StartsWith("Leaderboard read p99", StringComparison.Ordinal) && !double.IsNaN(r.Value)).ToList();
        var leaderboard = boards.Count == 0
            ? "leaderboard: not measured"
            : "leaderboard p99 " + string.Join(", ", boards.Select(r => $"{Num(r.Value)} ms at {Readers(r.Figure)}")) +
              $" (target 20: {(boards.All(r => r.Met == true) ? "met" : boards.Any(r => r.Met == true) ? "met at " + string.Join(", ", boards.Where(r => r.Met == true).Select(r => Readers(r.Figure))) + " only" : "missed")})" +
              (CatchUp is { CaughtUp: false } ? ", standings NOT caught up" : "");
        var pgCpu = rows.FirstOrDefault(r => r.Figure.StartsWith("CPU per event, PostgreSQL", StringComparison.Ordinal));
        var longRun = rows.FirstOrDefault(r => r.Figure.StartsWith("Single-event requests on runs already holding", StringComparison.Ordinal));
        var twoNodes = rows.FirstOrDefault(r => r.Figure.StartsWith("Hot run (", StringComparison.Ordinal) && r.Figure.EndsWith(", 2 nodes", StringComparison.Ordinal));
        var twoNodesP99 = rows.FirstOrDefault(r => r.Figure.StartsWith("Hot run, 2 nodes: request latency p99", StringComparison.Ordinal));
        var historyPage = rows.FirstOrDefault(r => r.Figure.StartsWith("History page", StringComparison.Ordinal) && r.Target != "–");
        var historyState = rows.FirstOrDefault(r => r.Figure.StartsWith("State at a random version", StringComparison.Ordinal) && r.Target != "–");
        var targets = rows.Where(r => r.Met is not null).ToList();
        var singleRaw = rows.FirstOrDefault(r => r.Figure.StartsWith("Ingestion, single-event requests (vs raw", StringComparison.Ordinal));
        var ledgerCpu = rows.FirstOrDefault(r => r.Figure.StartsWith("CPU per event, ledger", StringComparison.Ordinal));
        var parts = new[]
        {
            Part("single-event", single, r => $"{Ratio(r.Ratio)}× bare Marten Quick at 1/tx (target 1.0: {MetWord(r)})" +
                (singleRaw is null ? "" : $", {Ratio(singleRaw.Ratio)}× raw INSERT (target 0.20: {MetWord(singleRaw)})")),
            Part("p99", p99, r => $"{Num(r.Value)} ms (target 50: {MetWord(r)})"),
            Part("PostgreSQL CPU per single event", pgCpu, r => $"{Num(r.Value)} µs (target 400: {MetWord(r)})"),
            Part("ledger CPU per single event", ledgerCpu, r => $"{Num(r.Value)} µs (target 300: {MetWord(r)})"),
            Part("single events on long runs", longRun, r => $"{Ratio(r.Ratio)}× fresh runs (target 0.90: {MetWord(r)})"),
            Part("hot run on 2 nodes", twoNodes, r => $"{Ratio(r.Ratio)}× 1 node (target 0.50: {MetWord(r)})" +
                (twoNodesP99 is null ? "" : $", p99 {Num(twoNodesP99.Value)} ms (target 2,000: {MetWord(twoNodesP99)})")),
            Part("batches", batch, r => $"{Ratio(r.Ratio)}× bare Marten Quick at {r.Figure["Ingestion, batches of ".Length..]}/tx (target 0.60: {MetWord(r)})"),
            Part("batches vs COPY", copy, r => $"{Ratio(r.Ratio)}×"),
            Part("rebuild", rebuild, r => $"{Num(r.Value)} events/s (target 30,000: {MetWord(r)})"),
            leaderboard,
            Part("RSS peak", rss, r => $"{Num(r.Value)} MB (target 300: {MetWord(r)})"),
            Part("history page p99", historyPage, r => $"{Num(r.Value)} ms (target 100: {MetWord(r)})"),
            Part("state at a version p99", historyState, r => $"{Num(r.Value)} ms (target 100: {MetWord(r)})"),
            Soak is { } s
                ? $"soak RSS growth {Num(s.RssGrowthPercent)} % (target 10: {(s.RssGrowthPercent <= 10 ? "met" : "missed")}), soak peak {Num(s.PeakKb / 1024.0)} MB, " +
                  $"{Num(s.AchievedEventsPerSecond)} of {s.Plan.EventsPerSecond} events/s, {s.Errors} unexpected"
                : "soak: not measured",
            Retention is { } r
                ? $"retention: event-derived tables {Num(r.GrowthPercent)} % after the first window (target 10), sweep lag p99 {Num(r.LagSeconds?.P99)} s, " +
                  $"ingestion p99 {Ratio(r.ProbeRatio)}× without the sweep (target 1.2), archived history page p99 {Num(r.HistoryPage?.MedianP99)} ms (target 100)"
                : "retention: not measured",
        };
        return $"Summary: {string.Join("; ", parts)}. Targets met: {targets.Count(r => r.Met == true)} of {targets.Count} measured.";
    }

    /// <summary>"8 readers" out of a leaderboard figure's title.</summary>
    private static string Readers(string figure)
    {
        var end = figure.LastIndexOf(')');
        var start = figure.LastIndexOf(", ", end, StringComparison.Ordinal);
        return start < 0 || end < 0 ? figure : figure[(start + 2)..end];
    }

    private static string MetWord(Row r) => r.Met switch { true => "met", false => "missed", _ => "n/a" };

    private void AppendDetails(StringBuilder sb, BenchOptions o)
    {
        sb.AppendLine("## Details");
        sb.AppendLine();
        sb.AppendLine("Every repetition (events/s; request latency p50/p95/p99 in ms; errors):");
        sb.AppendLine();
        sb.AppendLine("| figure | repetitions (events/s) | p50 | p95 | p99 | requests/s | errors |");
        sb.AppendLine("|---|---|---:|---:|---:|---:|---:|");
        foreach (var m in _measurements.Values.Where(m => m.HasSamples))
        {
            var reps = string.Join(", ", m.Samples.Select(s => Num(s.EventsPerSecond)));
            sb.AppendLine($"| {m.Title} | {reps} | {Num(m.MedianP50)} | {Num(m.MedianP95)} | {Num(m.MedianP99)} | {Num(m.MedianOperationsPerSecond)} | {m.Errors} |");
        }
        var failing = _measurements.Values.Where(m => m.Errors > 0).ToList();
        if (failing.Count > 0) sb.AppendLine("\nFirst error of each figure that had any:");
        foreach (var m in failing)
        {
            var first = m.Samples.Select(s => s.FirstError).First(e => e is not null)!;
            sb.AppendLine($"- {m.Title}: `{(first.Length <= 400 ? first : first[..400] + "…").Replace("`", "'").ReplaceLineEndings(" ")}`");
        }
        sb.AppendLine();

        if (Writes.Count > 0)
        {
            sb.AppendLine("What PostgreSQL wrote per event (exact: WAL position and transaction ids, over all repetitions of the figure; the whole cluster, so the idle service is included):");
            sb.AppendLine();
            sb.AppendLine("| figure | WAL bytes per event | write transactions per event |");
            sb.AppendLine("|---|---:|---:|");
            foreach (var (key, w) in Writes)
            {
                if (!Has(key)) continue;
                var events = this[key].Samples.Sum(s => s.Events);
                if (events == 0) continue;
                sb.AppendLine($"| {this[key].Title} | {Num((double)w.WalBytes / events)} | {((double)w.WriteTransactions / events).ToString("0.00", CultureInfo.InvariantCulture)} |");
            }
            sb.AppendLine();
        }

        if (Cpu.Count > 0)
        {
            sb.AppendLine("CPU time per event, in microseconds, over all repetitions of the figure (from /proc; the bench process is the load generator and, for the in-process figures, Marten too; " +
                          "other = every other process on the machine, e.g. other work on a shared machine; busy = share of both cores in use). On 2 cores, events/s cannot exceed 2,000,000 / (sum of the columns):");
            sb.AppendLine();
            sb.AppendLine("| figure | ledger | bench | PostgreSQL | other | sum | machine busy |");
            sb.AppendLine("|---|---:|---:|---:|---:|---:|---:|");
            foreach (var (key, c) in Cpu)
            {
                if (!Has(key)) continue;
                var events = this[key].Samples.Sum(s => s.Events);
                if (events == 0) continue;
                double Us(long ticks) => ticks / CpuProbe.TicksPerSecond * 1e6 / events;
                var busy = c.MachineTotal == 0 ? double.NaN : 100.0 * c.MachineBusy / c.MachineTotal;
                sb.AppendLine($"| {this[key].Title} | {Num(Us(c.Ledger))} | {Num(Us(c.Bench))} | {Num(Us(c.Postgres))} | {Num(Us(c.Other))} | {Num(Us(c.Ledger + c.Bench + c.Postgres + c.Other))} | {busy:0}% |");
            }
            sb.AppendLine();
        }

        void Phases(string title, PhaseTimes p)
        {
            if (p.FetchMs.Count == 0) return;
            double Med(List<double> l) => Measurement.Median(l);
            var total = Med(p.FetchMs) + Med(p.DecideMs) + Med(p.SaveMs);
            sb.AppendLine($"| {title} | {p.FetchMs.Count:N0} | {Num(Med(p.FetchMs))} | {Num(Med(p.DecideMs))} | {Num(Med(p.SaveMs))} | {Num(total)} |");
        }
        if (DecidePhases.FetchMs.Count + DecidePhasesSolo.FetchMs.Count > 0)
        {
            sb.AppendLine("Where a decision's time goes (service write path in-process, Rich; medians in ms): " +
                          "fetch = `FetchForWriting<Run>` (reads the run document and stream version), decide = lease check, JSON copy of the run, Evaluate and Fold, " +
                          "save = `SaveChangesAsync` (append, upsert of the run document, commit):");
            sb.AppendLine();
            sb.AppendLine("| load | decisions | fetch | decide | save | sum |");
            sb.AppendLine("|---|---:|---:|---:|---:|---:|");
            Phases("1 worker, 1 event per tx", DecidePhasesSolo);
            Phases($"{o.Workers} workers, 1 event per tx", DecidePhases);
            Phases($"{o.Workers} workers, {o.BatchSize} events per tx", DecidePhasesBatch);
            sb.AppendLine();
        }

        foreach (var (events, sql) in DecisionSql)
        {
            sb.AppendLine($"The SQL of one decision appending {events} (service write path; captured with a Marten session logger): {sql.Count} round trips.");
            sb.AppendLine();
            sb.AppendLine("```");
            foreach (var line in sql) sb.AppendLine(line.Length <= 400 ? line : line[..400] + "…");
            sb.AppendLine("```");
            sb.AppendLine();
        }

        if (Has("diag.base1") || Has("diag.http1"))
        {
            sb.AppendLine("One worker, no contention (median p50 in ms): ");
            foreach (var (key, name) in new[] { ("diag.base1", "raw INSERT, 1 row per tx"), ("diag.decide1", "service write path in-process"), ("diag.http1", "ledger HTTP single-event request") })
            {
                if (Has(key)) sb.AppendLine($"- {name}: p50 {Num(this[key].MedianP50)} ms, p99 {Num(this[key].MedianP99)} ms, {Num(this[key].MedianEventsPerSecond)} events/s");
            }
            var controls = ControlCalls.Finish(TimeSpan.FromSeconds(1));
            if (controls.Operations > 0) sb.AppendLine($"- register + claim before each run (under load): p50 {Num(controls.P50Ms)} ms, p99 {Num(controls.P99Ms)} ms");
            sb.AppendLine();
        }

        if (LeaderboardProfile is { } lp)
        {
            sb.AppendLine($"Where a leaderboard read's time goes (in the bench process, on the service's store configuration, one reader, random pages of {o.LeaderboardPageSize}, {lp.Reads:N0} reads): " +
                          $"loading the board p50 {Num(lp.BoardLoadP50Ms)} ms; the ranked page through Marten LINQ over the standing documents (how the endpoint read them before it switched to the duplicated columns; kept as the comparison) p50 {Num(lp.PageQueryP50Ms)} ms, p99 {Num(lp.PageQueryP99Ms)} ms. " +
                          $"Stored standings: {Num(lp.StandingBytesAvg)} bytes on average (largest {lp.StandingBytesMax:N0}), {lp.ResultsPerStandingAvg:0.0} results each; " +
                          $"a page's HTTP body: {Num(lp.HttpBodyBytes)} bytes. The SQL of one read ({lp.RoundTrips.Count} round trips):");
            sb.AppendLine();
            sb.AppendLine("```");
            foreach (var line in lp.RoundTrips) sb.AppendLine(line);
            sb.AppendLine("```");
            sb.AppendLine();
            if (lp.Plan.Count > 0)
            {
                sb.AppendLine("Its page query, `explain (analyze, buffers)` with the parameters of one read:");
                sb.AppendLine();
                sb.AppendLine("```");
                foreach (var line in lp.Plan) sb.AppendLine(line);
                sb.AppendLine("```");
                sb.AppendLine();
            }
        }

        StartupFigures.AppendTo(sb, Starts, o);

        if (PeakRssByPhaseKb.Count > 0)
        {
            sb.AppendLine("Ledger RSS (VmRSS), peak per phase: " + string.Join(", ", PeakRssByPhaseKb.Select(kv => $"{kv.Key} {kv.Value / 1024.0:0} MB")) + ".");
            sb.AppendLine();
        }
        if (Peaks.Count > 0)
        {
            sb.AppendLine("Ledger RSS peak of each ledger process the bench started (the kernel's high-water mark VmHWM from /proc/PID/status, exact; beside it the largest of the " +
                          $"VmRSS samples taken every {LedgerProcess.SampleEvery.TotalMilliseconds:0} ms): " +
                          string.Join(", ", Peaks.Select(p => $"{p.Process} {p.PeakKb / 1024.0:0} MB (sampled {p.SampledPeakKb / 1024.0:0} MB, {p.Samples:N0} samples)")) + ".");
            sb.AppendLine();
        }
        if (Soak is { } soak) Ledger.Bench.Soak.AppendDetails(sb, soak);
        if (Retention is { } retention) RetentionFigures.AppendDetails(sb, retention);

        foreach (var note in Notes) sb.AppendLine($"- {note}");
    }

    public static string Num(double? v) => v switch
    {
        null => "–",
        double d when double.IsNaN(d) => "–",
        double d when Math.Abs(d) >= 100 => d.ToString("N0", CultureInfo.InvariantCulture),
        double d when Math.Abs(d) >= 10 => d.ToString("0.0", CultureInfo.InvariantCulture),
        double d => d.ToString("0.00", CultureInfo.InvariantCulture),
    };

    private static string Ratio(double? r) => r is { } v && !double.IsNaN(v) ? v.ToString("0.00", CultureInfo.InvariantCulture) : "–";
}
