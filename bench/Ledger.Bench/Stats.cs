using System.Diagnostics;

namespace Ledger.Bench;

/// <summary>Latencies and counts of one repetition, written by many tasks at once.</summary>
public sealed class Recorder
{
    private readonly object _gate = new();
    private readonly List<double> _latenciesMs = new(64 * 1024);
    private long _operations;
    private long _events;
    private long _errors;
    public string? FirstError { get; private set; }
    public long Operations { get { lock (_gate) return _operations; } }
    public long Events { get { lock (_gate) return _events; } }

    public void Add(long startTimestamp, int events)
    {
        var ms = Stopwatch.GetElapsedTime(startTimestamp).TotalMilliseconds;
        lock (_gate)
        {
            _latenciesMs.Add(ms);
            _operations++;
            _events += events;
        }
    }

    public void Error(string what)
    {
        lock (_gate)
        {
            _errors++;
            FirstError ??= what;
        }
    }

    public Sample Finish(TimeSpan elapsed)
    {
        lock (_gate)
        {
            _latenciesMs.Sort();
            return new Sample(elapsed, _operations, _events, _errors, FirstError,
                Percentile(_latenciesMs, 0.50), Percentile(_latenciesMs, 0.95), Percentile(_latenciesMs, 0.99));
        }
    }

    private static double Percentile(List<double> sorted, double q)
    {
        if (sorted.Count == 0) return double.NaN;
        // Nearest rank: the smallest value with at least q of the sample at or below it.
        var rank = (int)Math.Ceiling(q * sorted.Count);
        return sorted[Math.Clamp(rank - 1, 0, sorted.Count - 1)];
    }
}

/// <summary>One repetition of one figure.</summary>
public sealed record Sample(TimeSpan Elapsed, long Operations, long Events, long Errors, string? FirstError,
    double P50Ms, double P95Ms, double P99Ms)
{
    public double EventsPerSecond => Events / Elapsed.TotalSeconds;
    public double OperationsPerSecond => Operations / Elapsed.TotalSeconds;

    /// <summary>For figures that are a single timed operation (a rebuild): events over its duration.</summary>
    public static Sample Timed(TimeSpan elapsed, long events) =>
        new(elapsed, 1, events, 0, null, elapsed.TotalMilliseconds, elapsed.TotalMilliseconds, elapsed.TotalMilliseconds);
}

/// <summary>All repetitions of one figure; the report uses medians.</summary>
public sealed class Measurement(string key, string title)
{
    public string Key { get; } = key;
    public string Title { get; } = title;
    public List<Sample> Samples { get; } = [];

    public double MedianEventsPerSecond => Median(Samples.Select(s => s.EventsPerSecond));
    public double MedianOperationsPerSecond => Median(Samples.Select(s => s.OperationsPerSecond));
    public double MedianP50 => Median(Samples.Select(s => s.P50Ms));
    public double MedianP95 => Median(Samples.Select(s => s.P95Ms));
    public double MedianP99 => Median(Samples.Select(s => s.P99Ms));
    public long Errors => Samples.Sum(s => s.Errors);
    public bool HasSamples => Samples.Count > 0;

    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.Where(v => !double.IsNaN(v)).OrderBy(v => v).ToArray();
        if (sorted.Length == 0) return double.NaN;
        var mid = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    }
}

/// <summary>Runs closed-loop tasks until a deadline and collects one <see cref="Sample"/>.</summary>
public static class Load
{
    /// <summary>
    /// Starts <paramref name="concurrency"/> loops; each calls <paramref name="loop"/> with its index,
    /// the recorder and the deadline, and must return soon after the deadline passes.
    /// </summary>
    public static async Task<Sample> Run(int concurrency, TimeSpan duration,
        Func<int, Recorder, DateTime, Task> loop)
    {
        var recorder = new Recorder();
        var started = Stopwatch.GetTimestamp();
        var deadline = DateTime.UtcNow + duration;
        var tasks = Enumerable.Range(0, concurrency).Select(i => Task.Run(async () =>
        {
            try { await loop(i, recorder, deadline); }
            catch (Exception e) { recorder.Error($"{e.GetType().Name}: {e.Message}"); }
        })).ToArray();
        await Task.WhenAll(tasks);
        return recorder.Finish(Stopwatch.GetElapsedTime(started));
    }
}
