using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Ledger.Bench;

/// <summary>
/// The ledger as a real separate process (<c>dotnet Ledger.dll --urls http://127.0.0.1:PORT</c>),
/// so that its resident memory can be read from /proc while it is under load.
/// </summary>
public sealed class LedgerProcess : IAsyncDisposable
{
    // At least 16 characters: outside Development the ledger refuses shorter keys.
    public const string AdminKey = "bench-admin-key-0001";
    public const string WorkerKey = "bench-worker-key-0001";
    public const string ReadKey = "bench-read-key-00001";

    private readonly Process _process;
    private readonly StreamWriter _log;
    private readonly CancellationTokenSource _stopSampling = new();
    private readonly Task _sampler;
    private readonly object _gate = new();
    private long _peakRssKb;
    private long _highWaterMarkKb;
    private long _samples;
    private string _phase = "startup";
    private readonly Dictionary<string, long> _peakByPhase = new();

    private readonly LogWatch _watch;

    public Uri BaseAddress { get; }
    public int Pid => _process.Id;
    public string LogPath { get; }
    /// <summary>Lines of its log so far that mention a deadlock (SQLSTATE 40P01 or the word).</summary>
    public long DeadlockLines => _watch.DeadlockLines;
    public string? FirstDeadlockLine => _watch.FirstDeadlockLine;
    /// <summary>Whether it runs the async projections (Ledger:DaemonMode=Leader: Marten's HotCold daemon elects one instance; read from its log, see StartAsync).</summary>
    public bool LeadsProjections => _watch.LeadsProjections;

    private LedgerProcess(Process process, StreamWriter log, LogWatch watch, string logPath, Uri baseAddress)
    {
        _process = process;
        _log = log;
        _watch = watch;
        LogPath = logPath;
        BaseAddress = baseAddress;
        _sampler = Task.Run(SampleAsync);
    }

    /// <summary>Counts, as the log is written, what the bench reports about it.</summary>
    private sealed class LogWatch
    {
        private long _deadlockLines;
        public long DeadlockLines => Interlocked.Read(ref _deadlockLines);
        public string? FirstDeadlockLine { get; private set; }
        public bool LeadsProjections { get; private set; }

        public void Saw(string line)
        {
            // Marten's coordinator, at Information: "Started projection agent Standing:All" on the elected node.
            if (line.Contains("Stopped projection agent", StringComparison.Ordinal)) LeadsProjections = false;
            else if (line.Contains("Started projection agent", StringComparison.Ordinal)) LeadsProjections = true;
            if (!line.Contains("40P01", StringComparison.Ordinal) && !line.Contains("deadlock", StringComparison.OrdinalIgnoreCase)) return;
            if (Interlocked.Increment(ref _deadlockLines) == 1) FirstDeadlockLine = line.Trim();
        }
    }

    /// <summary>Starts it and returns once <paramref name="readyPath"/> answers 200 (polled every <paramref name="pollMilliseconds"/>).</summary>
    public static async Task<LedgerProcess> StartAsync(string dll, int port, string connectionString, string logPath, TimeSpan timeout,
        IReadOnlyDictionary<string, string>? extraEnvironment = null, string readyPath = "/health", int pollMilliseconds = 100)
    {
        var url = $"http://127.0.0.1:{port}";
        var psi = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = Path.GetDirectoryName(dll)!,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(dll);
        psi.ArgumentList.Add("--urls");
        psi.ArgumentList.Add(url);
        psi.Environment["ASPNETCORE_ENVIRONMENT"] = "Production";
        psi.Environment["DOTNET_ENVIRONMENT"] = "Production";
        psi.Environment["ConnectionStrings__Ledger"] = connectionString;
        psi.Environment["Ledger__AdminKey"] = AdminKey;
        psi.Environment["Ledger__WorkerKeys__0"] = WorkerKey;
        psi.Environment["Ledger__ReadKeys__0"] = ReadKey;
        psi.Environment["Ledger__Janitor__Enabled"] = "false";
        psi.Environment["Logging__LogLevel__Marten.Events.Daemon.Coordination"] = "Information";
        // The bench's own settings must not leak into the service.
        psi.Environment.Remove("DOTNET_gcServer");
        foreach (var (key, value) in extraEnvironment ?? new Dictionary<string, string>()) psi.Environment[key] = value;

        Directory.CreateDirectory(Path.GetDirectoryName(logPath)!);
        var log = new StreamWriter(logPath, append: false) { AutoFlush = true };
        var watch = new LogWatch();
        var process = Process.Start(psi) ?? throw new InvalidOperationException("could not start dotnet");
        process.OutputDataReceived += (_, e) => Write(log, watch, e.Data);
        process.ErrorDataReceived += (_, e) => Write(log, watch, e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        var ledger = new LedgerProcess(process, log, watch, logPath, new Uri(url));
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            if (process.HasExited)
            {
                await ledger.DisposeAsync();
                throw new InvalidOperationException($"The ledger exited with code {process.ExitCode} while starting; see {logPath}:\n{Tail(logPath)}");
            }
            try
            {
                using var response = await http.GetAsync($"{url}{readyPath}");
                if (response.IsSuccessStatusCode)
                {
                    if (ledger.HostsService(dll)) return ledger;
                    await ledger.DisposeAsync();
                    throw new InvalidOperationException($"pid {process.Id} answers on {url} but does not map {Path.GetFileName(dll)}: its memory would not be the service's");
                }
            }
            catch (HttpRequestException) { }
            catch (TaskCanceledException) { }
            if (DateTime.UtcNow > deadline)
            {
                await ledger.DisposeAsync();
                throw new TimeoutException($"GET {readyPath} did not answer 200 within {timeout.TotalSeconds:0}s; see {logPath}:\n{Tail(logPath)}");
            }
            await Task.Delay(pollMilliseconds);
        }
    }

    private static void Write(StreamWriter log, LogWatch watch, string? line)
    {
        if (line is null) return;
        watch.Saw(line);
        lock (log)
        {
            try { log.WriteLine(line); } catch (ObjectDisposedException) { }
        }
    }

    /// <summary>Names what the next RSS samples are attributed to.</summary>
    public void Phase(string name)
    {
        lock (_gate) _phase = name;
    }

    public long RssKb() => ReadMemory(_process.Id)?.RssKb ?? 0;
    /// <summary>What /proc/PID/status says of its memory now; null once it has exited.</summary>
    public ProcessMemory? Memory() => ReadMemory(_process.Id);

    /// <summary>
    /// The process's peak resident memory: the kernel's own high-water mark (VmHWM, exact, whatever
    /// happened between two samples), or the largest sample when that is larger (it never should be).
    /// </summary>
    public long PeakRssKb { get { lock (_gate) return Math.Max(_peakRssKb, _highWaterMarkKb); } }
    /// <summary>The largest VmRSS of the samples taken every <see cref="SampleEvery"/>.</summary>
    public long SampledPeakRssKb { get { lock (_gate) return _peakRssKb; } }
    public long Samples { get { lock (_gate) return _samples; } }
    public IReadOnlyDictionary<string, long> PeakRssByPhaseKb { get { lock (_gate) return new Dictionary<string, long>(_peakByPhase); } }
    public static readonly TimeSpan SampleEvery = TimeSpan.FromMilliseconds(200);

    private async Task SampleAsync()
    {
        while (!_stopSampling.IsCancellationRequested)
        {
            Sample();
            try { await Task.Delay(SampleEvery, _stopSampling.Token); } catch (OperationCanceledException) { }
        }
    }

    private void Sample()
    {
        if (ReadMemory(_process.Id) is not { } m) return;
        lock (_gate)
        {
            _samples++;
            _peakRssKb = Math.Max(_peakRssKb, m.RssKb);
            _highWaterMarkKb = Math.Max(_highWaterMarkKb, m.HighWaterMarkKb);
            _peakByPhase[_phase] = Math.Max(_peakByPhase.GetValueOrDefault(_phase), m.RssKb);
        }
    }

    /// <summary>
    /// Whether the process the bench samples is the service itself: <c>dotnet Ledger.dll</c> runs the
    /// application inside the host process (no child), so its memory maps hold the service's assembly.
    /// </summary>
    public bool HostsService(string dll)
    {
        try { return File.ReadLines($"/proc/{_process.Id}/maps").Any(l => l.EndsWith("/" + Path.GetFileName(dll), StringComparison.Ordinal)); }
        catch (IOException) { return false; }
        catch (UnauthorizedAccessException) { return false; }
    }

    private static ProcessMemory? ReadMemory(int pid)
    {
        try
        {
            long rss = -1, hwm = 0, anon = 0, file = 0, shmem = 0;
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
            {
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = Kb(line);
                else if (line.StartsWith("VmHWM:", StringComparison.Ordinal)) hwm = Kb(line);
                else if (line.StartsWith("RssAnon:", StringComparison.Ordinal)) anon = Kb(line);
                else if (line.StartsWith("RssFile:", StringComparison.Ordinal)) file = Kb(line);
                else if (line.StartsWith("RssShmem:", StringComparison.Ordinal)) shmem = Kb(line);
            }
            // A zombie (exited, not yet reaped) has no VmRSS line.
            return rss < 0 ? null : new ProcessMemory(rss, hwm, anon, file, shmem);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return null;

        static long Kb(string line) => long.Parse(new string(line.Where(char.IsDigit).ToArray()));
    }

    /// <summary>
    /// What the resident memory is made of, from /proc/PID/smaps: anonymous memory (GC heap, JIT'd
    /// code, native allocations) and the mapped files that take the most of it.
    /// </summary>
    public string MemoryBreakdown()
    {
        try
        {
            var files = new Dictionary<string, long>();
            long anonymous = 0, rss = 0;
            string? current = null;
            foreach (var line in File.ReadLines($"/proc/{_process.Id}/smaps"))
            {
                if (line.Length > 0 && char.IsAsciiHexDigit(line[0]) && line.Contains('-'))
                {
                    var parts = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
                    current = parts.Length >= 6 && parts[5].StartsWith('/') ? parts[5] : null;
                }
                else if (line.StartsWith("Rss:", StringComparison.Ordinal))
                {
                    var kb = long.Parse(new string(line.Where(char.IsDigit).ToArray()));
                    rss += kb;
                    if (current is not null) files[current] = files.GetValueOrDefault(current) + kb;
                }
                else if (line.StartsWith("Anonymous:", StringComparison.Ordinal))
                {
                    anonymous += long.Parse(new string(line.Where(char.IsDigit).ToArray()));
                }
            }
            var top = files.OrderByDescending(kv => kv.Value).Take(6)
                .Select(kv => $"{Path.GetFileName(kv.Key)} {kv.Value / 1024.0:0.0} MB");
            return $"RSS {rss / 1024.0:0} MB = anonymous {anonymous / 1024.0:0} MB (GC heaps, JIT'd code, native) + mapped files " +
                   $"{files.Values.Sum() / 1024.0:0} MB (largest: {string.Join(", ", top)})";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            return $"(no memory breakdown: {e.Message})";
        }
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);

    /// <summary>SIGTERM (a graceful ASP.NET Core shutdown), then a kill after 20 s.</summary>
    public async ValueTask DisposeAsync()
    {
        _stopSampling.Cancel();
        try { await _sampler; } catch { /* sampling only */ }
        Sample();
        if (!_process.HasExited)
        {
            kill(_process.Id, 15);
            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            try { await _process.WaitForExitAsync(wait.Token); }
            catch (OperationCanceledException) { _process.Kill(entireProcessTree: true); }
        }
        _process.Dispose();
        lock (_log) _log.Dispose();
    }

    public static string Tail(string path, int lines = 30)
    {
        try { return string.Join('\n', File.ReadLines(path).TakeLast(lines)); }
        catch (IOException) { return "(no log)"; }
    }
}

/// <summary>
/// One reading of /proc/PID/status, in kB: resident memory now (VmRSS = RssAnon + RssFile + RssShmem)
/// and its high-water mark since the process started (VmHWM).
/// </summary>
public readonly record struct ProcessMemory(long RssKb, long HighWaterMarkKb, long AnonymousKb, long FileKb, long SharedKb);
