namespace Ledger.Bench;

/// <summary>Command line of the benchmark; every count and duration is bounded.</summary>
public sealed class BenchOptions
{
    public bool Quick { get; private set; }
    /// <summary>Concurrent simulated workers (HTTP), connections (baseline) and sessions (Marten).</summary>
    public int Workers { get; private set; } = 8;
    /// <summary>Repetitions of every figure; the report gives their median.</summary>
    public int Repetitions { get; private set; } = 5;
    public int RebuildRepetitions { get; private set; } = 3;
    public TimeSpan HttpDuration { get; private set; } = TimeSpan.FromSeconds(10);
    public TimeSpan BaselineDuration { get; private set; } = TimeSpan.FromSeconds(5);
    public TimeSpan MartenDuration { get; private set; } = TimeSpan.FromSeconds(2);
    public TimeSpan ReadDuration { get; private set; } = TimeSpan.FromSeconds(5);
    /// <summary>Runs seeded (in-process, through Marten) before the read figures.</summary>
    public int Runs { get; private set; } = 100_000;
    /// <summary>Concurrent readers for GET /api/runs/{id}.</summary>
    public int ReadConcurrency { get; private set; } = 2;
    /// <summary>Participants the seeded runs are spread over, all on one board.</summary>
    public int Participants { get; private set; } = 1_000;
    /// <summary>Concurrent readers of GET /api/boards/{id}/leaderboard: one figure per count.</summary>
    public IReadOnlyList<int> LeaderboardReaders { get; private set; } = [1, 8];
    /// <summary>Runs finishing on the board per second while the leaderboard is read under load.</summary>
    public int FinishRate { get; private set; } = 200;
    /// <summary>Participants per leaderboard page read (the service's default page size).</summary>
    public int LeaderboardPageSize { get; private set; } = 50;
    public int BatchSize { get; private set; } = 100;
    /// <summary>Batches of <see cref="BatchSize"/> events per run in the batch lifecycle.</summary>
    public int BatchesPerRun { get; private set; } = 3;
    public int PostgresPort { get; private set; } = 54349;
    public int LedgerPort { get; private set; } = 54350;
    public string PostgresDirectory { get; private set; } = "/var/tmp/run-ledger/bench-postgres";
    public string? LedgerDll { get; private set; }
    public string? Output { get; private set; }
    public bool KeepDatabase { get; private set; }
    /// <summary>Seconds to wait for the service's async daemon to fold the seeded verdicts into standings.</summary>
    public int CatchUpSeconds { get; private set; } = 120;
    /// <summary>Extra environment for the ledger process (KEY=VALUE), for experiments such as DOTNET_gcServer=0.</summary>
    public Dictionary<string, string> LedgerEnvironment { get; } = new();
    /// <summary>Only rebuild the Run projection of an existing bench database (kept with --keep-db), then stop.</summary>
    public string? RebuildOnly { get; private set; }
    public bool Verbose { get; private set; }
    /// <summary>Skip ingestion, baselines and the Marten figures: for iterating on the read figures.</summary>
    public bool OnlyReads => Figures.SetEquals([Figure.Reads]);
    /// <summary>The groups of figures this run measures (<c>--only</c>); all of them by default.</summary>
    public HashSet<string> Figures { get; private set; } = [.. Figure.All];
    public bool Measures(string figure) => Figures.Contains(figure);
    /// <summary>Events each long run holds before single events are measured on it.</summary>
    public int LongRunEvents { get; private set; } = 10_000;
    /// <summary>Duration of one repetition of the long-run and hot-run figures.</summary>
    public TimeSpan ScaleDuration { get; private set; } = TimeSpan.FromSeconds(4);
    /// <summary>Events of the long run whose history pages and past states are read (the history figure).</summary>
    public int HistoryEvents { get; private set; } = 150_000;
    /// <summary>Node counts of the hot-run figure; 1 is always among them, as the others' baseline.</summary>
    public IReadOnlyList<int> NodeCounts { get; private set; } = [1, 2, 3];
    /// <summary>Length of the soak (a ledger process of its own under a steady mixed load, its memory read every 30 s).</summary>
    public int SoakMinutes { get; private set; } = 10;
    /// <summary>Worker events per second the soak asks for (reads and janitor work come on top).</summary>
    public int SoakEventsPerSecond { get; private set; } = 200;
    /// <summary>Length of the retention figure (runs finishing continuously while the sweep archives them).</summary>
    public int RetentionMinutes { get; private set; } = 10;
    /// <summary>Its window (<c>Ledger:Retention:ArchiveAfter</c>), in seconds.</summary>
    public int RetentionWindowSeconds { get; private set; } = 60;
    /// <summary>Runs (of about 20 events) finishing per second during it.</summary>
    public int RetentionRunsPerSecond { get; private set; } = 200;

    public static BenchOptions Parse(string[] args)
    {
        var o = new BenchOptions();
        if (args.Contains("--quick"))
        {
            o.Quick = true;
            o.Repetitions = 3;
            o.RebuildRepetitions = 3;
            o.HttpDuration = TimeSpan.FromSeconds(1.0);
            o.BaselineDuration = TimeSpan.FromSeconds(0.5);
            o.MartenDuration = TimeSpan.FromSeconds(0.4);
            o.ReadDuration = TimeSpan.FromSeconds(0.5);
            o.Runs = 2_000;
            o.CatchUpSeconds = 30;
            o.LongRunEvents = 1_000;
            o.ScaleDuration = TimeSpan.FromSeconds(1.0);
            o.NodeCounts = [1, 2];
            o.SoakMinutes = 3;
            o.RetentionMinutes = 3;
            o.RetentionWindowSeconds = 30;
        }

        for (var i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--quick": break;
                case "--workers": o.Workers = Positive(Next()); break;
                case "--reps": o.Repetitions = Positive(Next()); break;
                case "--rebuild-reps": o.RebuildRepetitions = Positive(Next()); break;
                case "--http-seconds": o.HttpDuration = Seconds(Next()); break;
                case "--baseline-seconds": o.BaselineDuration = Seconds(Next()); break;
                case "--marten-seconds": o.MartenDuration = Seconds(Next()); break;
                case "--read-seconds": o.ReadDuration = Seconds(Next()); break;
                case "--runs": o.Runs = Math.Max(10, Positive(Next())); break;
                case "--read-concurrency": o.ReadConcurrency = Positive(Next()); break;
                case "--participants": o.Participants = Positive(Next()); break;
                case "--leaderboard-readers":
                    o.LeaderboardReaders = Next().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                        .Select(r => Math.Min(64, Positive(r))).Distinct().ToList();
                    if (o.LeaderboardReaders.Count == 0) throw new ArgumentException("--leaderboard-readers needs counts, e.g. 1,8");
                    break;
                case "--page-size": o.LeaderboardPageSize = Math.Min(500, Positive(Next())); break;
                case "--finish-rate": o.FinishRate = Positive(Next()); break;
                case "--batch-size": o.BatchSize = Math.Min(1000, Positive(Next())); break;
                case "--batches-per-run": o.BatchesPerRun = Positive(Next()); break;
                case "--pg-port": o.PostgresPort = Positive(Next()); break;
                case "--port": o.LedgerPort = Positive(Next()); break;
                case "--pg-dir": o.PostgresDirectory = Next(); break;
                case "--ledger-dll": o.LedgerDll = Next(); break;
                case "--out": o.Output = Next(); break;
                case "--keep-db": o.KeepDatabase = true; break;
                case "--catch-up-seconds": o.CatchUpSeconds = Positive(Next()); break;
                case "--ledger-env":
                    var pair = Next();
                    var eq = pair.IndexOf('=');
                    if (eq <= 0) throw new ArgumentException($"--ledger-env needs KEY=VALUE, not '{pair}'");
                    o.LedgerEnvironment[pair[..eq]] = pair[(eq + 1)..];
                    break;
                case "--rebuild-only": o.RebuildOnly = Next(); break;
                case "--verbose": o.Verbose = true; break;
                case "--only-reads": o.Figures = [Figure.Reads]; break;
                case "--only":
                    var figures = Next().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                    if (figures.Length == 0 || figures.Any(f => !Figure.All.Contains(f)))
                    {
                        throw new ArgumentException($"--only takes a list of {string.Join(", ", Figure.All)}");
                    }
                    o.Figures = [.. figures];
                    break;
                case "--long-run-events": o.LongRunEvents = Math.Min(100_000, Positive(Next())); break;
                case "--scale-seconds": o.ScaleDuration = Seconds(Next()); break;
                case "--history-events": o.HistoryEvents = Math.Clamp(Positive(Next()), 2_000, 1_000_000); break;
                case "--nodes":
                    var nodes = Next();
                    // N: every count from 1 to N; a list (1,3): those counts, 1 always included.
                    List<int> counts = nodes.Contains(',')
                        ? nodes.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(Positive).ToList()
                        : Enumerable.Range(1, Positive(nodes)).ToList();
                    if (counts.Any(n => n > 8)) throw new ArgumentException("--nodes: at most 8 ledger processes");
                    o.NodeCounts = counts.Append(1).Distinct().Order().ToList();
                    break;
                case "--soak-minutes": o.SoakMinutes = Math.Min(60, Positive(Next())); break;
                case "--soak-rate": o.SoakEventsPerSecond = Math.Min(2_000, Positive(Next())); break;
                case "--retention-minutes": o.RetentionMinutes = Math.Min(60, Positive(Next())); break;
                case "--retention-window": o.RetentionWindowSeconds = Math.Clamp(Positive(Next()), 3, 3600); break;
                case "--retention-rate": o.RetentionRunsPerSecond = Math.Min(2_000, Positive(Next())); break;
                case "-h" or "--help":
                    Console.WriteLine(Help);
                    Environment.Exit(0);
                    break;
                default: throw new ArgumentException($"Unknown option {args[i]}\n{Help}");
            }
        }

        // Bounded: nothing runs for long whatever is asked.
        o.Repetitions = Math.Min(o.Repetitions, 9);
        o.RebuildRepetitions = Math.Min(o.RebuildRepetitions, 9);
        o.Workers = Math.Min(o.Workers, 64);
        o.Runs = Math.Min(o.Runs, 1_000_000);
        o.Participants = Math.Min(o.Participants, o.Runs);
        o.CatchUpSeconds = Math.Min(o.CatchUpSeconds, 600);
        return o;
    }

    private static int Positive(string s) => int.TryParse(s, out var v) && v > 0 ? v : throw new ArgumentException($"'{s}' is not a positive number");

    private static TimeSpan Seconds(string s) =>
        double.TryParse(s, System.Globalization.CultureInfo.InvariantCulture, out var v) && v > 0 && v <= 120
            ? TimeSpan.FromSeconds(v)
            : throw new ArgumentException($"'{s}' is not a duration in seconds (0-120]");

    public const string Help = """
        Ledger.Bench: ingestion, baselines, Marten append modes, replay and reads, in one run.
          dotnet run -c Release --project bench/Ledger.Bench -- [--quick] [options]
        options:
          --quick                 small counts, about 90 s (3 repetitions) plus a 3-minute soak
          --workers N             concurrent simulated workers (default 8)
          --reps N                repetitions per figure, median reported (default 5, quick 3)
          --rebuild-reps N        repetitions of the projection rebuild (default 3)
          --http-seconds S        duration of one ledger ingestion repetition (default 10)
          --baseline-seconds S    duration of one baseline repetition (default 5)
          --marten-seconds S      duration of one Marten append-mode repetition (default 2)
          --read-seconds S        duration of one read repetition (default 5)
          --runs N                runs seeded through Marten before the reads (default 100000, quick 2000)
          --read-concurrency N    concurrent readers of GET /api/runs/{id} (default 2)
          --participants N        participants the seeded runs are spread over, on one board (default 1000)
          --leaderboard-readers L concurrent leaderboard readers, one figure each (default 1,8)
          --page-size N           participants per leaderboard page read (default 50)
          --finish-rate N         runs finishing on the board per second during the leaderboard-under-load reads (default 200)
          --catch-up-seconds S    wait for the standings to fold the seeded verdicts (default 120, quick 30)
          --batch-size N          events per batch request / multi-row INSERT / COPY (default 100)
          --batches-per-run N     batches per run in the batch lifecycle (default 3)
          --pg-port P             port of the bench's private PostgreSQL (default 54349)
          --port P                loopback port of the ledger process (default 54350)
          --pg-dir DIR            data directory of the private PostgreSQL (default /var/tmp/run-ledger/bench-postgres)
          --ledger-dll PATH       the service to start (default src/Ledger/bin/<same configuration>/net10.0/Ledger.dll)
          --out FILE              report file (default bench/results/latest.md)
          --keep-db               keep the bench database (dropped by default)
          --ledger-env KEY=VALUE  extra environment for the ledger process (repeatable), e.g. DOTNET_gcServer=0
          --rebuild-only DB       only time the Run projection rebuild of a kept bench database, then stop
          --verbose               log the projection daemon's progress during rebuilds
          --only-reads            skip ingestion, baselines and Marten figures (seeding, reads and rebuild only)
          --only LIST             measure only these groups: ingestion (with its baselines and CPU per event),
                                  long-run, nodes, marten, reads (seeding, catch-up, reads, rebuild), history (pages
                                  and states of a run of --history-events events), soak, retention (runs finishing while
                                  the sweep archives them; an archived run of --history-events events), startup (at least 5 starts: time to
                                  /health/live, RSS, first requests, RSS after --http-seconds of load); default all
          --long-run-events N     events each long run holds before it is measured (default 10000, quick 1000)
          --scale-seconds S       duration of one long-run / fresh-run / hot-run repetition (default 4, quick 1)
          --history-events N      events of the run the history figure reads (default 150000, seed 003's size)
          --nodes N|LIST          hot run over 1..N ledger processes, or over the listed counts (1 always
                                  measured as the baseline); default 3 (1,2,3), quick 2 (1,2); ports --port, +1, …
          --soak-minutes N        length of the soak (default 10, quick 3; at most 60); its webhook receiver
                                  listens on --port + 8
          --soak-rate N           worker events per second during the soak (default 200)
          --retention-minutes N   length of the retention figure (default 10, quick 3; at most 60)
          --retention-window S    its window, Ledger:Retention:ArchiveAfter, in seconds (default 60, quick 30)
          --retention-rate N      runs of about 20 events finishing per second during it (default 200)
        """;
}

/// <summary>The groups of figures <c>--only</c> selects.</summary>
public static class Figure
{
    public const string Ingestion = "ingestion";
    public const string LongRun = "long-run";
    public const string Nodes = "nodes";
    public const string Marten = "marten";
    public const string Reads = "reads";
    public const string Startup = "startup";
    public const string History = "history";
    public const string Soak = "soak";
    public const string Retention = "retention";
    public static readonly IReadOnlyList<string> All = [Ingestion, LongRun, Nodes, Marten, Reads, History, Soak, Retention, Startup];
}
