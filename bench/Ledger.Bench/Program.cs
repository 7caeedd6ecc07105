using System.Diagnostics;
using Ledger.Infrastructure;
using Ledger.Leaderboards;
using Marten;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Ledger.Bench;

public static class BenchProgram
{
#if DEBUG
    private const string Configuration = "Debug";
    private static readonly bool IsDebug = true;
#else
    private const string Configuration = "Release";
    private static readonly bool IsDebug = false;
#endif

    public static async Task<int> Main(string[] args)
    {
        BenchOptions o;
        try { o = BenchOptions.Parse(args); }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine(e.Message);
            return 2;
        }

        var clock = Stopwatch.StartNew();
        var repo = FindRepoRoot();
        var dll = Path.GetFullPath(o.LedgerDll ?? Path.Combine(repo, "src", "Ledger", "bin", Configuration, "net10.0", "Ledger.dll"));
        var output = Path.GetFullPath(o.Output ?? Path.Combine(repo, "bench", "results", "latest.md"));
        if (!File.Exists(dll))
        {
            Console.Error.WriteLine($"The service is not built: {dll} is missing. Run: dotnet build -c {Configuration} src/Ledger");
            return 2;
        }
        if (IsDebug) Console.Error.WriteLine("warning: a Debug build is not representative; run with -c Release");

        using var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) => { e.Cancel = true; cancel.Cancel(); };

        var database = o.RebuildOnly ?? $"bench_{DateTime.UtcNow:yyyyMMdd_HHmmss}_{Environment.ProcessId}";
        var results = new Results();
        var pg = new EmbeddedPostgres(new EmbeddedPostgresOptions
        {
            DataDirectory = o.PostgresDirectory,
            Port = o.PostgresPort,
            Database = database,
        }, m => Log($"postgres: {m}"));

        Log($"{(o.Quick ? "quick" : "full")} mode, {o.Workers} workers, {o.Repetitions} repetitions; service {dll}");
        string connectionString;
        try { connectionString = pg.Start(); }
        catch (EmbeddedPostgresUnavailableException e)
        {
            Console.Error.WriteLine($"Cannot start PostgreSQL: {e.Message}");
            return 2;
        }

        if (o.RebuildOnly is not null)
        {
            try { await RebuildOnlyAsync(o, connectionString, cancel.Token); }
            finally
            {
                NpgsqlConnection.ClearAllPools();
                pg.Stop();
            }
            return 0;
        }

        var status = 0;
        try
        {
            await RunAsync(o, results, repo, dll, connectionString, database, cancel.Token);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            Console.Error.WriteLine($"Benchmark failed: {e}");
            results.Notes.Add($"The run FAILED before the end: {e.GetType().Name}: {e.Message.Split('\n')[0]}");
            status = 1;
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            if (!o.KeepDatabase) DropDatabase(pg, database);
            pg.Stop();
        }

        results.Total = clock.Elapsed;
        Directory.CreateDirectory(Path.GetDirectoryName(output)!);
        var markdown = results.Markdown(o);
        await File.WriteAllTextAsync(output, markdown);
        Console.WriteLine();
        Console.WriteLine(markdown);
        Log($"report written to {output}; total {clock.Elapsed.TotalSeconds:0.0} s");
        return status;
    }

    private static async Task RunAsync(BenchOptions o, Results results, string repo, string dll, string connectionString,
        string database, CancellationToken ct)
    {
        // The anchors (raw Npgsql, bare Marten) connect as the ledger does by default: its statement
        // preparation merged in (ConnectionSettings), with a pool of at least one connection per worker.
        var anchorConnection = new NpgsqlConnectionStringBuilder(ConnectionSettings.WithStatementCaching(connectionString))
        {
            MaxPoolSize = Math.Max(20, o.Workers * 2),
        }.ConnectionString;
        await using var db = NpgsqlDataSource.Create(anchorConnection);
        var version = await Sql.ScalarAsync<string>(db, "show server_version");
        results.Machine = Machine.Read(version, repo);
        var synchronousCommit = await Sql.ScalarAsync<string>(db, "show synchronous_commit");
        results.DurabilityHolds = synchronousCommit == "on";
        results.Durability = $"synchronous_commit={synchronousCommit}, " +
                             $"fsync={await Sql.ScalarAsync<string>(db, "show fsync")}, " +
                             $"wal_sync_method={await Sql.ScalarAsync<string>(db, "show wal_sync_method")}, " +
                             $"shared_buffers={await Sql.ScalarAsync<string>(db, "show shared_buffers")} (PostgreSQL defaults, fresh database {database})";
        // The ledger is given the bench's plain connection string and merges its own defaults in, as it ships.
        results.Connections = (Ledger: ConnectionSettings.WithoutPassword(ConnectionSettings.WithStatementCaching(connectionString)),
            Anchors: ConnectionSettings.WithoutPassword(anchorConnection));
        Log(results.Machine.Line);

        // The service's own store configuration, in-process: seeds the runs for the reads, then rebuilds.
        await using var mirror = await MartenStores.CreateAsync(m => MartenStores.Mirror(m, connectionString, "ledger"), applySchema: false);
        _names = new StorageNames(mirror);

        // Restarts of the service, each its own process, before the one the other figures use.
        if (o.Measures(Figure.Startup)) results.Starts = await StartupFigures.MeasureAsync(o, dll, connectionString, database, Log, ct);

        // The service, as its own process.
        var logPath = Path.Combine("/var/tmp/run-ledger/bench-logs", $"{database}.log");
        var startup = Stopwatch.StartNew();
        var ledger = await LedgerProcess.StartAsync(dll, o.LedgerPort, connectionString, logPath, TimeSpan.FromSeconds(180), o.LedgerEnvironment);
        _probe = new CpuProbe(o.PostgresDirectory) { LedgerPid = ledger.Pid };
        Log($"ledger pid {ledger.Pid} healthy after {startup.Elapsed.TotalSeconds:0.0} s (log {logPath})");
        results.Notes.Add($"The ledger ran as `dotnet {Path.GetRelativePath(repo, dll)} --urls {ledger.BaseAddress}` (pid {ledger.Pid}), healthy {startup.Elapsed.TotalSeconds:0.0} s after start; its log: {logPath}.");

        try
        {
            using var client = new LedgerClient(ledger.BaseAddress, o.Workers + o.ReadConcurrency + 2);
            var baseline = new Baseline(o, db);
            await baseline.SetUpAsync();

            // Warm-up: the first calls JIT everything (and, in builds before the committed generated code, compiled Wolverine's adapters).
            ledger.Phase("warm-up");
            var warm = Stopwatch.StartNew();
            await HttpIngestion.WarmUpAsync(client, o, IngestionMode.Single, "warm-single");
            await HttpIngestion.WarmUpAsync(client, o, IngestionMode.Batch, "warm-batch");
            await baseline.SingleRowAsync("warm-base", 2, TimeSpan.FromMilliseconds(100));
            await baseline.MultiRowAsync("warm-base-multi", 2, TimeSpan.FromMilliseconds(100));
            await baseline.CopyAsync("warm-base-copy", 2, TimeSpan.FromMilliseconds(100));
            Log($"warm-up done in {warm.Elapsed.TotalSeconds:0.0} s (every warm-up run ended succeeded)");
            if (o.Measures(Figure.Ingestion) || o.Measures(Figure.LongRun) || o.Measures(Figure.Nodes))
            {
                // Then load until the runtime has compiled what the load runs at its final tier: the
                // figures are the service's steady state (its start-up is the startup figure's).
                var settle = await WarmUp.UntilCompiledAsync(client, o, Log, ct);
                results.Notes.Add(settle);
            }

            // The bare Marten anchors, in-process, measured with the ingestion; the Marten figures below reuse them.
            await using var marten = o.Measures(Figure.Ingestion) || o.Measures(Figure.Marten) ? new MartenFigures(o, anchorConnection) : null;
            if (marten is not null)
            {
                await marten.PrepareAsync();
                await marten.AppendAsync("quick", 1, "warm-anchor-1", TimeSpan.FromMilliseconds(300));
                await marten.AppendAsync("quick", o.BatchSize, "warm-anchor-100", TimeSpan.FromMilliseconds(300));
            }
            // Every table the figures write is logged (no UNLOGGED shortcut on either side).
            await using (var unlogged = db.CreateCommand(
                             "select n.nspname || '.' || c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relpersistence = 'u' order by 1"))
            await using (var reader = await unlogged.ExecuteReaderAsync(ct))
            {
                while (await reader.ReadAsync(ct)) results.UnloggedTables.Add(reader.GetString(0));
            }

            // Ingestion, interleaved with its baselines so that noise on the shared machine hits both alike.
            var w = o.Workers;
            for (var rep = 1; rep <= (o.Measures(Figure.Ingestion) ? o.Repetitions : 0); rep++)
            {
                ct.ThrowIfCancellationRequested();
                await Measure(results, db, "base.single", "Baseline: raw INSERT, 1 row per tx",
                    () => baseline.SingleRowAsync($"b1-r{rep}", w, o.BaselineDuration));
                ledger.Phase("ingestion (single)");
                await Measure(results, db, "ledger.single", "Ledger: single-event requests",
                    () => HttpIngestion.RunAsync(client, o, IngestionMode.Single, $"s-r{rep}", w, o.HttpDuration, results.ControlCalls));
                ledger.Phase("idle");
                await Measure(results, db, "base.multi", $"Baseline: multi-row INSERT of {o.BatchSize}",
                    () => baseline.MultiRowAsync($"bm-r{rep}", w, o.BaselineDuration));
                ledger.Phase("ingestion (batch)");
                await Measure(results, db, "ledger.batch", $"Ledger: batches of {o.BatchSize}",
                    () => HttpIngestion.RunAsync(client, o, IngestionMode.Batch, $"m-r{rep}", w, o.HttpDuration, results.ControlCalls));
                ledger.Phase("idle");
                await Measure(results, db, "base.copy", $"Baseline: binary COPY of {o.BatchSize}",
                    () => baseline.CopyAsync($"bc-r{rep}", w, o.BaselineDuration));
                await Measure(results, db, "anchor.quick1", "Anchor: bare Marten Quick append, 1 event per tx (in-process)",
                    () => marten!.AppendAsync("quick", 1, $"q1-r{rep}", o.BaselineDuration));
                await Measure(results, db, "anchor.quick100", $"Anchor: bare Marten Quick append, {o.BatchSize} events per tx (in-process)",
                    () => marten!.AppendAsync("quick", o.BatchSize, $"q100-r{rep}", o.BaselineDuration));
                Log($"ingestion rep {rep}/{o.Repetitions}: ledger single {Last(results, "ledger.single")}, Marten quick 1/tx {Last(results, "anchor.quick1")}, row/tx {Last(results, "base.single")}, " +
                    $"ledger batch {Last(results, "ledger.batch")}, Marten quick {o.BatchSize}/tx {Last(results, "anchor.quick100")}, multi-row {Last(results, "base.multi")}, copy {Last(results, "base.copy")}");
            }

            // Single events on runs that already hold many events, interleaved with the same on fresh runs.
            if (o.Measures(Figure.LongRun)) await MeasureLongRunsAsync(o, results, db, client, ledger, ct);

            // One hot run whose lease every worker shares, over 1, 2, 3 ledger processes on the same database.
            if (o.Measures(Figure.Nodes)) await MeasureNodesAsync(o, results, db, ledger, dll, connectionString, database, ct);

            // Marten append modes and the service's write path, in-process, on schemas of their own.
            if (o.Measures(Figure.Marten) && marten is not null)
            {
                var prep = Stopwatch.StartNew();
                foreach (var mode in new[] { "rich", "quick" })
                {
                    await marten.AppendAsync(mode, 1, $"warm-a1-{mode}", o.MartenDuration).ConfigureAwait(false);
                    await marten.DecideAsync(mode, 1, $"warm-d1-{mode}", 2, TimeSpan.FromMilliseconds(200), null);
                }
                Log($"Marten stores ready and warm in {prep.Elapsed.TotalSeconds:0.0} s");
                foreach (var mode in new[] { "rich", "quick" })
                {
                    foreach (var size in new[] { 1, o.BatchSize })
                    {
                        var (first, next) = await marten.CaptureDecisionsAsync(mode, size, $"sql-{mode}-{size}");
                        var events = size == 1 ? "1 event" : $"{size} events";
                        results.DecisionSql[$"{events}, {mode}, the writer's first decision on the run (it reads the run)"] = first;
                        results.DecisionSql[$"{events}, {mode}, its next decision on the run (state and version kept from its commit)"] = next;
                    }
                }

                for (var rep = 1; rep <= o.Repetitions; rep++)
                {
                    ct.ThrowIfCancellationRequested();
                    foreach (var mode in new[] { "rich", "quick" })
                    {
                        var title = mode == "rich" ? "Rich" : "Quick";
                        await Measure(results, db, $"marten.append1.{mode}", $"Marten {title} append, 1 event per tx",
                            () => marten.AppendAsync(mode, 1, $"a1-{mode}-r{rep}", o.MartenDuration));
                        await Measure(results, db, $"marten.append100.{mode}", $"Marten {title} append, {o.BatchSize} events per tx",
                            () => marten.AppendAsync(mode, o.BatchSize, $"a100-{mode}-r{rep}", o.MartenDuration));
                        await Measure(results, db, $"marten.decide1.{mode}", $"Service write path in-process, {title}, 1 event per tx",
                            () => marten.DecideAsync(mode, 1, $"d1-{mode}-r{rep}", w, o.MartenDuration, mode == "rich" ? results.DecidePhases : null));
                        await Measure(results, db, $"marten.decide100.{mode}", $"Service write path in-process, {title}, {o.BatchSize} events per tx",
                            () => marten.DecideAsync(mode, o.BatchSize, $"d100-{mode}-r{rep}", w, o.MartenDuration, mode == "rich" ? results.DecidePhasesBatch : null));
                    }
                    // Where one uncontended request's time goes.
                    await Measure(results, db, "diag.base1", "One worker: raw INSERT, 1 row per tx",
                        () => baseline.SingleRowAsync($"x1-r{rep}", 1, o.MartenDuration));
                    await Measure(results, db, "diag.decide1", "One worker: service write path in-process (Rich)",
                        () => marten.DecideAsync("rich", 1, $"x2-r{rep}", 1, o.MartenDuration, results.DecidePhasesSolo));
                    ledger.Phase("ingestion (one worker)");
                    await Measure(results, db, "diag.http1", "One worker: ledger single-event requests",
                        () => HttpIngestion.RunAsync(client, o, IngestionMode.Single, $"x3-r{rep}", 1, o.MartenDuration));
                    ledger.Phase("idle");
                    Log($"Marten rep {rep}/{o.Repetitions}: rich 1/tx {Last(results, "marten.append1.rich")}, quick 1/tx {Last(results, "marten.append1.quick")}, " +
                        $"rich {o.BatchSize}/tx {Last(results, "marten.append100.rich")}, quick {o.BatchSize}/tx {Last(results, "marten.append100.quick")}, " +
                        $"write path rich {Last(results, "marten.decide1.rich")}, quick {Last(results, "marten.decide1.quick")}");
                }
            }

            // Reads: seed runs straight into the service's event store, then GET them over HTTP.
            if (o.Measures(Figure.Reads))
            {
                await MeasureKpisAsync(o, results, db, new StorageNames(mirror), ledger.BaseAddress, KpiFigures.Few);
                {
                    ledger.Phase("seeding");
                    // The board over HTTP, as an orchestrator defines it; its ranking as the service stored it.
                    await client.DefineBoardAsync(Seeder.BoardDefinition);
                    Ranking ranking;
                    await using (var query = mirror.QuerySession())
                    {
                        ranking = (await query.LoadAsync<Board>(Seeder.Board, ct))?.Ranking
                                  ?? throw new InvalidOperationException($"board {Seeder.Board} was defined but cannot be read back");
                    }
                    var plan = new SeedPlan(o.Runs, o.Participants, Seeder.Board, ranking);
                    var seed = await Seeder.SeedAsync(mirror, plan, parallelism: 4);
                    var seedTime = seed.Elapsed;
                    var expected = seed.Expected;
                    results.SeededRuns = o.Runs;
                    results.Board = expected;
                    results.SeededTimes = seed.Times;
                    Log($"seeded {o.Runs:N0} runs ({seed.Events:N0} events; {expected.SucceededRuns:N0} succeeded, {expected.FailedRuns:N0} failed, " +
                        $"{expected.Participants:N0} participants on {Seeder.Board}) in {seedTime.TotalSeconds:0.0} s");
                    results.Notes.Add($"Reads: {o.Runs:N0} finished runs ({seed.Events:N0} events) were seeded in {seedTime.TotalSeconds:0.0} s " +
                                      $"({seed.Events / seedTime.TotalSeconds:N0} events/s) by appending their events directly through Marten in-process " +
                                      "(the service's store configuration and inline projections, 250 runs per transaction), not over HTTP. " +
                                      $"All are entered on board `{Seeder.Board}` (defined with POST /api/boards: {ranking.PrimaryScore} {Dir(ranking.Direction)}, " +
                                      $"tie-break {ranking.TieBreakScore ?? "none"} {Dir(ranking.TieBreakDirection)}) by {o.Participants:N0} participants in turn, registered with the board's ranking; " +
                                      $"{expected.SucceededRuns:N0} succeeded and {expected.FailedRuns:N0} failed (1 in 20), and each stream ends with the `VerdictReached` " +
                                      "the service appends beside the events that end a run (`Run.LatestVerdict()` of the folded run).");

                    // The standings are an async projection: the service's daemon folds the verdicts after the fact.
                    ledger.Phase("standings catch-up");
                    var cpuBefore = _probe?.Read();
                    var catchUp = await StandingsCatchUp.WaitAsync(connectionString, new StorageNames(mirror), client, Seeder.Board, expected.Participants,
                        TimeSpan.FromSeconds(o.CatchUpSeconds), Log, ct);
                    var cpu = _probe is not null && cpuBefore is { } cb ? _probe.Read() - cb : (CpuCounters?)null;
                    results.CatchUp = catchUp;
                    results.CatchUpCpu = cpu;
                    Log(catchUp.CaughtUp
                        ? $"standings caught up {catchUp.Waited.TotalSeconds:0.0} s after seeding: {catchUp.ParticipantsSeen:N0} participants"
                        : $"standings NOT caught up after {catchUp.Waited.TotalSeconds:0} s: shard {catchUp.LagAtEnd:N0} events behind, " +
                          $"{catchUp.ParticipantsSeen:N0} of {catchUp.ParticipantsExpected:N0} participants; measuring anyway");
                    results.Notes.Add(CatchUpNote(catchUp, cpu, seedTime));

                    var (st, body) = await client.GetRunAsync(Seeder.RunId(0));
                    if (st != System.Net.HttpStatusCode.OK || !body.Contains("\"status\":\"succeeded\"", StringComparison.Ordinal))
                    {
                        throw new InvalidOperationException($"a seeded run does not read back as succeeded over HTTP: {(int)st} {body}");
                    }
                    if (catchUp.CaughtUp) await CheckTopAsync(client, expected, results);
                }
                results.RunsAtReads = await Sql.ScalarAsync<long>(db, RunCount(new StorageNames(mirror)));
                await EstablishKpisAsync(results, mirror, connectionString, ledger.BaseAddress);

                ledger.Phase("reads");
                var pages = Math.Max(1, (int)Math.Ceiling((results.Board?.Participants ?? 1) / (double)o.LeaderboardPageSize));
                for (var i = 0; i < 20 * o.ReadConcurrency; i++) await client.ReadRunAsync(Seeder.RunId(i % o.Runs));
                for (var i = 0; i < 20 * o.LeaderboardReaders.Max(); i++) await client.ReadLeaderboardAsync(Seeder.Board, 1 + i % pages, o.LeaderboardPageSize);
                for (var rep = 1; rep <= o.Repetitions; rep++)
                {
                    ct.ThrowIfCancellationRequested();
                    await Measure(results, null, "reads.get", "GET /api/runs/{id}",
                        () => Reads.RunAsync(client, r => Seeder.RunId(r.Next(o.Runs)), o.ReadConcurrency, o.ReadDuration));
                    await Measure(results, null, KpiFigures.Many, KpiFigures.Title(results.RunsAtReads),
                        () => KpiFigures.ReadAsync(ledger.BaseAddress, o.ReadConcurrency, o.ReadDuration));
                    foreach (var readers in o.LeaderboardReaders)
                    {
                        await Measure(results, null, $"reads.board.{readers}",
                            $"GET /api/boards/{{id}}/leaderboard, random page of {o.LeaderboardPageSize}, {readers} reader{(readers == 1 ? "" : "s")}",
                            () => Reads.LeaderboardAsync(client, Seeder.Board, pages, o.LeaderboardPageSize, readers, o.ReadDuration));
                    }
                }
                await MeasureBoardUnderLoadAsync(o, results, client, ledger, pages, ct);
                Log($"reads: p50 {results["reads.get"].MedianP50:0.00} ms, p99 {results["reads.get"].MedianP99:0.00} ms over {results.RunsAtReads:N0} runs");
                foreach (var readers in o.LeaderboardReaders)
                {
                    var m = results[$"reads.board.{readers}"];
                    Log($"leaderboard, {readers} reader(s): p50 {m.MedianP50:0.00} ms, p99 {m.MedianP99:0.00} ms, {m.MedianOperationsPerSecond:N0} requests/s");
                }
                results.LeaderboardProfile = await LeaderboardProfiler.RunAsync(mirror, db, client, connectionString, Seeder.Board, pages,
                    o.LeaderboardPageSize, o.ReadDuration);
                Log($"leaderboard in-process (no HTTP): board load p50 {results.LeaderboardProfile.BoardLoadP50Ms:0.00} ms, " +
                    $"ranked page p50 {results.LeaderboardProfile.PageQueryP50Ms:0.00} ms; standings average {results.LeaderboardProfile.StandingBytesAvg:N0} bytes " +
                    $"({results.LeaderboardProfile.ResultsPerStandingAvg:0.0} results each), page body {results.LeaderboardProfile.HttpBodyBytes:N0} bytes");
            }

            // Long runs stay readable: history pages and past states of a run of 150,000 events.
            if (o.Measures(Figure.History)) await HistoryFigures.MeasureAsync(o, results, mirror, ledger, ct);
        }
        finally
        {
            results.AddPeak("node 1", ledger);
            results.PeakRssByPhaseKb = ledger.PeakRssByPhaseKb;
            var breakdown = ledger.MemoryBreakdown();
            results.Notes.Add($"Ledger memory at the end of the load: {breakdown}.");
            Log($"ledger RSS peak {ledger.PeakRssKb / 1024.0:0} MB; {breakdown}; stopping it");
            if (_probe is not null) _probe.LedgerPid = null;
            await ledger.DisposeAsync();
        }

        // Replay: the service is stopped; rebuild the Run projection from all of its events.
        using var logging = RebuildLogging(o);
        if (o.Measures(Figure.Reads))
        {
            results.RebuildEvents = await Sql.ScalarAsync<long>(db, $"select count(*) from {new StorageNames(mirror).Events}");
            var docs = await Sql.ScalarAsync<long>(db, $"select count(*) from {new StorageNames(mirror).Table<Ledger.Runs.Run>()}");
            var digestSql = $"select coalesce(md5(string_agg(id || ':' || data::text, ',' order by id)), '') from {new StorageNames(mirror).Table<Ledger.Runs.Run>()}";
            var before = await Sql.ScalarAsync<string>(db, digestSql);
            for (var rep = 1; rep <= o.RebuildRepetitions; rep++)
            {
                ct.ThrowIfCancellationRequested();
                var cpuBefore = _probe?.Read();
                var allocated = GC.GetTotalAllocatedBytes();
                var elapsed = await Rebuild.RunAsync(mirror, ct, logging.CreateLogger("Rebuild"));
                results.RebuildAllocatedBytes += GC.GetTotalAllocatedBytes() - allocated;
                if (_probe is not null && cpuBefore is { } cb) results.AddCpu("rebuild", _probe.Read() - cb);
                results.Get("rebuild", "Projection rebuild (Run)").Samples.Add(Sample.Timed(elapsed, results.RebuildEvents));
                Log($"rebuild {rep}/{o.RebuildRepetitions}: {results.RebuildEvents:N0} events in {elapsed.TotalSeconds:0.00} s ({results.RebuildEvents / elapsed.TotalSeconds:N0} events/s)");
            }
            var docsAfter = await Sql.ScalarAsync<long>(db, $"select count(*) from {new StorageNames(mirror).Table<Ledger.Runs.Run>()}");
            var after = await Sql.ScalarAsync<string>(db, digestSql);
            results.Notes.Add($"Rebuild: {results.RebuildEvents:N0} events of {docs:N0} runs, through Marten's projection daemon " +
                              $"(`BuildProjectionDaemonAsync()` then `RebuildProjectionAsync<Run>()`), with the service stopped; " +
                              $"{docsAfter:N0} run documents afterwards; stored run documents {(before == after ? "identical byte for byte" : "DIFFERENT")} before and after the rebuilds.");
        }

        // The soak: a ledger process of its own under a steady mixed load, its memory read every 30 s.
        if (o.Measures(Figure.Soak))
        {
            results.Soak = await Soak.RunAsync(o, dll, connectionString, Path.Combine("/var/tmp/run-ledger/bench-logs", $"{database}.soak.log"), _probe, Log, ct);
            results.AddPeak("soak", results.Soak.PeakKb, results.Soak.SampledPeakKb, results.Soak.RssSamples);
        }

        // Retention: runs finishing continuously while the sweep archives them, then an archived long run's history.
        if (o.Measures(Figure.Retention))
        {
            results.Retention = await RetentionFigures.RunAsync(o, dll, connectionString,
                Path.Combine("/var/tmp/run-ledger/bench-logs", $"{database}.retention.log"), Log, ct);
            results.AddPeak("retention", results.Retention.PeakKb, results.Retention.SampledPeakKb, results.Retention.RssSamples);
        }

        results.Notes.Add("Ledger events/s count the worker events acknowledged as applied over the whole wall time, which also includes registering and claiming each run (2 more requests per run, not counted as events). " +
                          "Latencies are per request, measured by the load generator on the same 2 cores (so they include client time).");
        results.Notes.Add("The in-process Marten figures share the bench process with the load generator; they use schemas of their own in the same database, with the service idle.");
    }

    /// <summary>
    /// One run per worker is brought to <see cref="BenchOptions.LongRunEvents"/> events over HTTP;
    /// then single-event requests on those long runs alternate, repetition by repetition, with the
    /// same requests on fresh runs (registered and claimed just before), so that both meet the same noise.
    /// </summary>
    /// <summary>
    /// The board while runs keep finishing on it (prepared beforehand: registered and claimed over
    /// HTTP), with the delay until a new best verdict shows at rank 1; then the board as of random
    /// past times (?at=), answered from the standings' change history.
    /// </summary>
    private static async Task MeasureBoardUnderLoadAsync(BenchOptions o, Results results, LedgerClient client, LedgerProcess ledger,
        int pages, CancellationToken ct)
    {
        var readers = o.LeaderboardReaders.Max();
        var perRep = (int)Math.Ceiling(o.FinishRate * o.ReadDuration.TotalSeconds * 1.1) + 10;
        ledger.Phase("board under load (preparing runs)");
        var prepareTime = Stopwatch.StartNew();
        var prepared = await BoardUnderLoad.PrepareAsync(client, Seeder.Board, "bench", perRep * o.Repetitions, o.Participants);
        Log($"prepared {prepared.Count:N0} registered and claimed runs on {Seeder.Board} in {prepareTime.Elapsed.TotalSeconds:0.0} s");
        ledger.Phase("board under load");
        for (var rep = 1; rep <= o.Repetitions; rep++)
        {
            ct.ThrowIfCancellationRequested();
            var cpuBefore = _probe?.Read();
            var sample = await BoardUnderLoad.RunAsync(client, Seeder.Board, pages, o.LeaderboardPageSize, readers, o.ReadDuration,
                o.FinishRate, prepared, probeScoreBase: 1_000.0 * rep);
            if (_probe is not null && cpuBefore is { } cb) results.AddCpu($"reads.board.live.{readers}", _probe.Read() - cb);
            results.Get($"reads.board.live.{readers}", $"GET leaderboard, random page of {o.LeaderboardPageSize}, {readers} readers, while {o.FinishRate} runs/s finish on the board")
                .Samples.Add(sample.Reads);
            results.Get($"finishes.live.{readers}", $"Completion requests (scores.reported + run.completed) on the board during those reads, {o.FinishRate}/s asked")
                .Samples.Add(sample.Finishes);
            results.VisibleAfterMs.AddRange(sample.VisibleAfterMs);
            results.VisibilityProbes += sample.Probes;
            results.VisibilityUnseen += sample.ProbesNeverSeen;
            Log($"board under load {rep}: reads p99 {sample.Reads.P99Ms:0.0} ms, {sample.Finishes.OperationsPerSecond:N0} finishes/s ({sample.Finishes.Errors} errors), " +
                $"visible after {(sample.VisibleAfterMs.Count == 0 ? "–" : $"{sample.VisibleAfterMs.Max():0} ms worst")} ({sample.ProbesNeverSeen} never)");
        }

        if (results.SeededTimes is { } times)
        {
            ledger.Phase("board as of a time");
            foreach (var n in o.LeaderboardReaders)
            {
                for (var rep = 1; rep <= o.Repetitions; rep++)
                {
                    await Measure(results, null, $"reads.board.asof.{n}",
                        $"GET leaderboard?at=TIME (random time over the seeded verdicts), random page of {o.LeaderboardPageSize}, {n} reader{(n == 1 ? "" : "s")}",
                        () => Reads.LeaderboardAsOfAsync(client, Seeder.Board, pages, o.LeaderboardPageSize, n, o.ReadDuration, times.From, times.To));
                }
                Log($"leaderboard ?at=, {n} reader(s): p99 {results[$"reads.board.asof.{n}"].MedianP99:0.00} ms");
            }
        }
    }

    private static async Task MeasureLongRunsAsync(BenchOptions o, Results results, NpgsqlDataSource db, LedgerClient client,
        LedgerProcess ledger, CancellationToken ct)
    {
        ledger.Phase("long runs (seeding)");
        var seed = await ScaleFigures.SeedLongRunsAsync(client, o.Workers, o.LongRunEvents, o.BatchSize, "long");
        var seeded = (long)o.Workers * o.LongRunEvents;
        var (status, body) = await client.GetRunAsync(seed.Runs[0].RunId);
        using (var json = System.Text.Json.JsonDocument.Parse(body))
        {
            // The stream holds the registration and the claim besides the worker events.
            var version = json.RootElement.GetProperty("version").GetInt64();
            var state = json.RootElement.GetProperty("status").GetString();
            if (status != System.Net.HttpStatusCode.OK || version != o.LongRunEvents + 2 || state != "running")
            {
                throw new InvalidOperationException($"long run {seed.Runs[0].RunId} should be running at version {o.LongRunEvents + 2}: {(int)status} {body[..Math.Min(300, body.Length)]}");
            }
        }
        Log($"seeded {o.Workers} long runs of {o.LongRunEvents:N0} events over HTTP ({seed.Requests:N0} batches of {o.BatchSize}) " +
            $"in {seed.Elapsed.TotalSeconds:0.0} s ({seeded / seed.Elapsed.TotalSeconds:N0} events/s)");

        var longKey = "long.single";
        var longTitle = $"Single-event requests on runs already holding {o.LongRunEvents:N0} events";
        const string freshKey = "fresh.single";
        const string freshTitle = "Single-event requests on fresh runs (registered and claimed)";
        long added = 0;
        for (var rep = 1; rep <= o.Repetitions; rep++)
        {
            ct.ThrowIfCancellationRequested();
            var fresh = await ScaleFigures.OpenAsync(client, Enumerable.Range(0, o.Workers).Select(w => $"fresh-r{rep}-w{w}"));
            async Task Long()
            {
                ledger.Phase("single events (long runs)");
                await Measure(results, db, longKey, longTitle,
                    () => ScaleFigures.SingleEventsAsync([client], seed.Runs, $"long-r{rep}", o.Workers, o.ScaleDuration, results.OutcomesOf(longKey)));
                added += results[longKey].Samples[^1].Events;
            }
            async Task Fresh()
            {
                ledger.Phase("single events (fresh runs)");
                await Measure(results, db, freshKey, freshTitle,
                    () => ScaleFigures.SingleEventsAsync([client], fresh, $"fresh-r{rep}", o.Workers, o.ScaleDuration, results.OutcomesOf(freshKey)));
            }
            // Alternate which goes first, so that neither always follows the other's writes.
            if (rep % 2 == 1) { await Long(); await Fresh(); }
            else { await Fresh(); await Long(); }
            ledger.Phase("idle");
            Log($"long runs rep {rep}/{o.Repetitions}: long {Last(results, longKey)}, fresh {Last(results, freshKey)}");
        }
        results.Notes.Add($"Long runs: {o.Workers} runs (one per worker) were brought to {o.LongRunEvents:N0} events each over HTTP, in batches of {o.BatchSize} " +
                          $"with the lease token (run.started, then steps of 10: step.started, 5 logs, heartbeat, items.committed without an expected total, a log, step.completed; " +
                          $"registered with nothing required), {seeded:N0} events in {seed.Elapsed.TotalSeconds:0.0} s ({seeded / seed.Elapsed.TotalSeconds:N0} events/s). " +
                          $"Then each repetition sent single-event requests (a log of 5 lines, then a heartbeat, in turn) for {o.ScaleDuration.TotalSeconds:0.#} s on those runs " +
                          $"and for as long on {o.Workers} fresh runs registered and claimed just before, alternating which went first. " +
                          $"The long runs kept what the measurement added: {o.LongRunEvents:N0} events each at the first repetition, about {o.LongRunEvents + added / o.Workers:N0} after the last.");
    }

    /// <summary>
    /// Starts the other ledger processes on consecutive ports (same database and settings), then,
    /// for each node count, one run registered and claimed whose lease token every worker shares,
    /// sending single events to the first N nodes in turn. Node counts alternate their order by
    /// repetition; every node stays up (idle when not addressed) until the last repetition.
    /// </summary>
    private static async Task MeasureNodesAsync(BenchOptions o, Results results, NpgsqlDataSource db, LedgerProcess first,
        string dll, string connectionString, string database, CancellationToken ct)
    {
        var max = o.NodeCounts.Max();
        var serverLog = new ServerLog(Path.Combine(o.PostgresDirectory, "server.log"));
        var nodes = new List<LedgerProcess> { first };
        var clients = new List<LedgerClient> { new(first.BaseAddress, o.Workers + 2) };
        try
        {
            var startup = Stopwatch.StartNew();
            var starting = Enumerable.Range(2, max - 1).Select(n => LedgerProcess.StartAsync(dll, o.LedgerPort + n - 1, connectionString,
                Path.Combine("/var/tmp/run-ledger/bench-logs", $"{database}.node{n}.log"), TimeSpan.FromSeconds(180), o.LedgerEnvironment)).ToList();
            try { await Task.WhenAll(starting); }
            finally { nodes.AddRange(starting.Where(t => t.IsCompletedSuccessfully).Select(t => t.Result)); }
            clients.AddRange(nodes.Skip(1).Select(n => new LedgerClient(n.BaseAddress, o.Workers + 2)));
            if (_probe is not null) _probe.OtherLedgerPids = nodes.Skip(1).Select(n => n.Pid).ToList();
            if (max > 1) Log($"{max - 1} more ledger process(es) healthy after {startup.Elapsed.TotalSeconds:0.0} s: " + string.Join(", ", nodes.Skip(1).Select(n => $"{n.BaseAddress} (pid {n.Pid})")));

            // The new processes compile Wolverine's and Marten's generated code on their first calls.
            for (var n = 2; n <= max; n++) await HttpIngestion.WarmUpAsync(clients[n - 1], o, IngestionMode.Single, $"warm-node{n}");
            var warm = await ScaleFigures.OpenAsync(clients[0], ["hot-warm"]);
            await ScaleFigures.SingleEventsAsync(clients, warm, "hot-warm", o.Workers, TimeSpan.FromSeconds(0.5));

            for (var rep = 1; rep <= o.Repetitions; rep++)
            {
                var counts = rep % 2 == 1 ? o.NodeCounts : o.NodeCounts.Reverse().ToList();
                foreach (var n in counts)
                {
                    ct.ThrowIfCancellationRequested();
                    var key = $"nodes.{n}";
                    var hot = await ScaleFigures.OpenAsync(clients[0], [$"hot-n{n}-r{rep}"]);
                    var deadlockLines = nodes.Sum(p => p.DeadlockLines);
                    var logMark = serverLog.Mark();
                    first.Phase($"hot run, {n} node(s)");
                    await Measure(results, db, key, $"Hot run: {o.Workers} workers on one run's lease, round-robin over {n} node{(n == 1 ? "" : "s")}",
                        () => ScaleFigures.SingleEventsAsync(clients.Take(n).ToList(), hot, $"hot-n{n}-r{rep}", o.Workers, o.ScaleDuration, results.OutcomesOf(key)));
                    first.Phase("idle");
                    results.AddDeadlockLines(key, nodes.Sum(p => p.DeadlockLines) - deadlockLines);
                    results.AddServerLog(key, serverLog.Since(logMark));
                    Log($"hot run rep {rep}/{o.Repetitions}, {n} node(s): {Last(results, key)}, failed {results.OutcomesOf(key)}, " +
                        $"deadlock lines in node logs {results.DeadlockLines.GetValueOrDefault(key)} so far");
                }
            }
        }
        finally
        {
            if (_probe is not null) _probe.OtherLedgerPids = [];
            foreach (var c in clients) c.Dispose();
            var leader = nodes.FindIndex(n => n.LeadsProjections);
            results.Notes.Add($"Hot run: {max} ledger process{(max == 1 ? "" : "es")} on ports {o.LedgerPort}–{o.LedgerPort + max - 1}, same database, same settings " +
                              "(janitor disabled; `Ledger:DaemonMode` left at its default `Leader`, so one of them, elected by Marten's HotCold daemon, runs the async projections: " +
                              $"{(leader < 0 ? "none said so in its log" : $"node {leader + 1}")}), all up for every node count (the ones not addressed idle). " +
                              $"Each repetition registers and claims one run (node 1), then {o.Workers} workers share its lease token and send single events (a log, then a heartbeat, in turn, unique event ids) " +
                              $"for {o.ScaleDuration.TotalSeconds:0.#} s, worker w's i-th request to node (w + i) mod N. Latencies cover every answered request, refused ones included. " +
                              $"Node logs: {string.Join(", ", nodes.Select(n => Path.GetFileName(n.LogPath)))} in {Path.GetDirectoryName(first.LogPath)}; " +
                              $"lines mentioning a deadlock over the whole run: {string.Join(", ", nodes.Select((n, i) => $"node {i + 1} {n.DeadlockLines:N0}"))}" +
                              (nodes.Select(n => n.FirstDeadlockLine).FirstOrDefault(l => l is not null) is { } line ? $"; the first: `{line[..Math.Min(200, line.Length)].Replace("`", "'")}`" : "") +
                              (nodes.Count > 1 ? $". RSS peak of the other nodes: {string.Join(", ", nodes.Skip(1).Select((n, i) => $"node {i + 2} {n.PeakRssKb / 1024.0:0} MB"))}." : "."));
            foreach (var (node, i) in nodes.Select((n, i) => (n, i)).Skip(1)) results.AddPeak($"node {i + 1}", node);
            foreach (var node in nodes.Skip(1)) await node.DisposeAsync();
        }
    }

    private static CpuProbe? _probe;
    /// <summary>The service's tables and schema, as its own store configuration names them (set once the mirror store exists).</summary>
    private static StorageNames? _names;

    private static string Dir(Direction d) => d == Direction.Max ? "max" : "min";

    private static string CatchUpNote(CatchUpResult c, CpuCounters? cpu, TimeSpan seedTime)
    {
        var sb = new System.Text.StringBuilder();
        sb.Append(c.CaughtUp
            ? $"Standings catch-up: the service's async daemon had folded every seeded verdict ({c.ParticipantsSeen:N0} participants on the board) {c.Waited.TotalSeconds:0.0} s after the seeding ended"
            : $"Standings catch-up: NOT finished {c.Waited.TotalSeconds:0} s after the seeding ended: the standings shard was still {c.LagAtEnd:N0} events behind and the board showed {c.ParticipantsSeen:N0} of {c.ParticipantsExpected:N0} participants; the leaderboard reads ran while it caught up");
        sb.Append($" (the seeding itself took {seedTime.TotalSeconds:0.0} s, while the daemon ran). When the seeding ended the standings shard was {c.LagAtStart:N0} events behind " +
                  $"(daemon high water mark {c.Target - c.HighWaterMarkAtStart:N0} behind); the events it still had to go through held {c.VerdictsToFold:N0} verdicts among {c.EventsToFold:N0} events");
        var moved = c.ShardAtEnd - c.ShardAtStart;
        if (c.Waited.TotalSeconds > 0 && moved > 0) sb.Append($"; it advanced {moved / c.Waited.TotalSeconds:N0} events/s ({c.VerdictsToFold * Math.Min(1.0, (double)moved / Math.Max(1, c.LagAtStart)) / c.Waited.TotalSeconds:N0} verdicts/s)");
        sb.Append('.');
        if (cpu is { } u)
        {
            double S(long ticks) => ticks / CpuProbe.TicksPerSecond;
            sb.Append($" CPU during the wait: ledger {S(u.Ledger):0.0} s, PostgreSQL {S(u.Postgres):0.0} s, bench {S(u.Bench):0.0} s, other {S(u.Other):0.0} s" +
                      $" ({(u.MachineTotal == 0 ? double.NaN : 100.0 * u.MachineBusy / u.MachineTotal):0}% of both cores busy).");
        }
        if (c.Samples > 0)
        {
            var busy = c.Activity.Sum(a => a.Count);
            sb.Append($" The service's database sessions, sampled {c.Samples:N0} times (every 100 ms) in pg_stat_activity: ");
            sb.Append(busy == 0
                ? "never seen busy."
                : string.Join("; ", c.Activity.Select(a => $"{100.0 * a.Count / c.Samples:0}% `{a.What.Replace("`", "'")}`")) + " (share of samples in which a session was doing it).");
        }
        return sb.ToString();
    }

    /// <summary>The first row of the board must be the best run the seeding computed on its own.</summary>
    private static async Task CheckTopAsync(LedgerClient client, ExpectedBoard expected, Results results)
    {
        var (status, body) = await client.GetLeaderboardAsync(Seeder.Board, 1, 1);
        using var json = System.Text.Json.JsonDocument.Parse(body);
        var root = json.RootElement;
        var participants = root.GetProperty("participants").GetInt64();
        var rows = root.GetProperty("rows");
        var top = rows.GetArrayLength() > 0 ? rows[0] : default;
        var runId = top.ValueKind == System.Text.Json.JsonValueKind.Object ? top.GetProperty("runId").GetString() : null;
        var participant = top.ValueKind == System.Text.Json.JsonValueKind.Object ? top.GetProperty("participant").GetString() : null;
        if (status != System.Net.HttpStatusCode.OK || participants != expected.Participants || runId != expected.Top.RunId || participant != expected.TopParticipant)
        {
            throw new InvalidOperationException($"the leaderboard does not match the seeded verdicts: expected {expected.Participants} participants, " +
                                                $"first {expected.TopParticipant} with {expected.Top.RunId} ({expected.Top.Score}); got {(int)status} {body}");
        }
        results.Notes.Add($"The leaderboard read back as the seeding computed it: {participants:N0} participants, first {participant} with run {runId} " +
                          $"({expected.Top.Score}, tie-break {expected.Top.TieBreak}).");
    }

    private static ILoggerFactory RebuildLogging(BenchOptions o) => LoggerFactory.Create(b =>
    {
        b.AddSimpleConsole(c => { c.SingleLine = true; c.TimestampFormat = "HH:mm:ss.fff "; });
        b.SetMinimumLevel(o.Verbose ? LogLevel.Debug : LogLevel.Warning);
    });

    /// <summary>Times the Run projection rebuild of a kept bench database: for before/after comparisons of a fix.</summary>
    private static async Task RebuildOnlyAsync(BenchOptions o, string connectionString, CancellationToken ct)
    {
        await using var db = NpgsqlDataSource.Create(connectionString);
        using var logging = RebuildLogging(o);
        await using var mirror = await MartenStores.CreateAsync(m => MartenStores.Mirror(m, connectionString, "ledger"), applySchema: false);
        var events = await Sql.ScalarAsync<long>(db, $"select count(*) from {new StorageNames(mirror).Events}");
        var streams = await Sql.ScalarAsync<long>(db, $"select count(*) from {new StorageNames(mirror).Streams}");
        _probe = new CpuProbe(o.PostgresDirectory);
        for (var rep = 1; rep <= o.RebuildRepetitions; rep++)
        {
            var before = _probe.Read();
            var allocated = GC.GetTotalAllocatedBytes();
            var gcs = GC.CollectionCount(0);
            var elapsed = await Rebuild.RunAsync(mirror, ct, logging.CreateLogger("Rebuild"));
            var cpu = _probe.Read() - before;
            Log($"allocated {(GC.GetTotalAllocatedBytes() - allocated) / (double)events:N0} bytes per event, {GC.CollectionCount(0) - gcs} gen0 GCs");
            Log($"rebuild {rep}/{o.RebuildRepetitions}: {events:N0} events of {streams:N0} runs in {elapsed.TotalSeconds:0.00} s " +
                $"= {events / elapsed.TotalSeconds:N0} events/s; CPU bench {cpu.Bench / CpuProbe.TicksPerSecond:0.0} s, " +
                $"PostgreSQL {cpu.Postgres / CpuProbe.TicksPerSecond:0.0} s, other {cpu.Other / CpuProbe.TicksPerSecond:0.0} s");
        }
    }

    /// <summary>
    /// The runs stored: every stream but Marten's tombstone stream, which it creates the first time a
    /// transaction fails after drawing sequence numbers (a run cannot take its id: see Identifiers).
    /// </summary>
    private static string RunCount(StorageNames names) =>
        $"select count(*) from {names.Streams} where id <> '{JasperFx.StorageConstants.TombstoneStreamKey}'";

    /// <summary>GET /api/kpis at the runs stored now (before the seeding: the small count the 100k figure is compared with).</summary>
    private static async Task MeasureKpisAsync(BenchOptions o, Results results, NpgsqlDataSource db, StorageNames names, Uri ledger, string key)
    {
        var runs = await Sql.ScalarAsync<long>(db, RunCount(names));
        // A first read compiles the endpoint's code: warm it as long as one repetition, so that the few-runs figure is not the JIT's.
        await KpiFigures.ReadAsync(ledger, o.ReadConcurrency, o.ReadDuration);
        for (var rep = 1; rep <= o.Repetitions; rep++)
        {
            await Measure(results, null, key, KpiFigures.Title(runs), () => KpiFigures.ReadAsync(ledger, o.ReadConcurrency, o.ReadDuration));
        }
        Log($"KPI reads at {runs:N0} runs: p50 {results[key].MedianP50:0.00} ms, p99 {results[key].MedianP99:0.00} ms");
    }

    /// <summary>The seeding bypassed the service's writers: re-establish the KPI counters from the stored data, and check them.</summary>
    private static async Task EstablishKpisAsync(Results results, DocumentStore mirror, string connectionString, Uri ledger)
    {
        var established = await KpiFigures.EstablishAsync(mirror, connectionString);
        var counted = await KpiFigures.RunsAsync(ledger);
        if (counted != results.RunsAtReads)
        {
            throw new InvalidOperationException($"GET /api/kpis counts {counted:N0} runs after the counters were established, the store holds {results.RunsAtReads:N0}");
        }
        Log($"KPI counters established from {established.Runs:N0} stored runs in {established.Took.TotalSeconds:0.00} s");
        results.Notes.Add($"KPIs: the seeding appends past the service's writers, so the kept counters were then recounted from the {established.Runs:N0} stored runs " +
                          $"(`KpiStore.RebuildAsync`, as `kpis rebuild` does) in {established.Took.TotalSeconds:0.00} s, with the service running; GET /api/kpis then counted " +
                          $"all {counted:N0} runs. That recount is what a KPI read would cost if it recomputed; the kept read is measured before the seeding and after it.");
    }

    private static async Task Measure(Results results, NpgsqlDataSource? db, string key, string title, Func<Task<Sample>> run)
    {
        var before = db is null ? default : await WriteCounters.ReadAsync(db);
        var cpuBefore = _probe?.Read();
        var sample = await run();
        // The window closes once the service's async work (projections, the webhook relay) has caught up with
        // the events the figure wrote: their cost is part of what those events cost.
        if (db is not null) results.AddCatchUp(key, await DaemonCatchUp.WaitAsync(db, _names!, TimeSpan.FromSeconds(30)));
        if (_probe is not null && cpuBefore is { } cb) results.AddCpu(key, _probe.Read() - cb);
        if (db is not null) results.AddWrites(key, await WriteCounters.ReadAsync(db) - before);
        results.Get(key, title).Samples.Add(sample);
        if (sample.Errors > 0) Log($"{title}: {sample.Errors} errors, first: {sample.FirstError}");
    }

    private static string Last(Results r, string key) =>
        r.Has(key) ? $"{r[key].Samples[^1].EventsPerSecond:N0}/s p99 {r[key].Samples[^1].P99Ms:0.0}ms" : "–";

    private static void DropDatabase(EmbeddedPostgres pg, string database)
    {
        try
        {
            using var conn = new NpgsqlConnection(pg.ServerConnectionString());
            conn.Open();
            using var cmd = new NpgsqlCommand($"drop database if exists \"{database}\" with (force)", conn);
            cmd.ExecuteNonQuery();
            Log($"dropped database {database}");
        }
        catch (Exception e)
        {
            Log($"could not drop database {database}: {e.Message}");
        }
    }

    private static string FindRepoRoot()
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Ledger.sln"))) return dir.FullName;
            }
        }
        throw new InvalidOperationException("Run the bench from inside the repository (Ledger.sln not found).");
    }

    private static readonly Stopwatch Since = Stopwatch.StartNew();
    public static void Log(string message) => Console.WriteLine($"[{Since.Elapsed.TotalSeconds,6:0.0}s] {message}");
}
