using System.Diagnostics;
using System.Globalization;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Ledger.Infrastructure;

/// <summary>Bound from <c>Ledger:Progress</c>: how long commands (verify, export, rebuild) report their progress.</summary>
public sealed class ProgressOptions
{
    public const string Section = "Ledger:Progress";

    /// <summary>When standard error is not a terminal: seconds between two plain progress lines (0: a line at every step).</summary>
    public double IntervalSeconds { get; set; } = 10;
}

/// <summary>
/// The progress of long work that a person waits for: <c>verify</c>, <c>export --since</c>, the
/// projection <c>rebuild</c>, and whatever later work takes minutes (a retention sweep). On a
/// terminal, a Spectre.Console progress display (done, rate, time left); when standard error is
/// redirected (a log, a pipe, a supervisor), plain lines every <see cref="ProgressOptions.IntervalSeconds"/>
/// and one when a stage ends. Always on standard error: standard output stays the command's own
/// (an export without <c>--out</c> writes its NDJSON there).
/// </summary>
public static class LongWork
{
    /// <summary>Runs <paramref name="work"/>, which reports its stages through the <see cref="ProgressReport"/> it is given.</summary>
    public static async Task<T> RunAsync<T>(string command, ProgressOptions options, Func<ProgressReport, Task<T>> work, TextWriter? plain = null)
    {
        if (plain is null && !Console.IsErrorRedirected)
        {
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
            return await console.Progress()
                .AutoClear(false)
                .HideCompleted(false)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new DoneColumn(), new RateColumn(), new RemainingTimeColumn())
                .StartAsync(context => work(new ProgressReport(command, context, null, TimeSpan.Zero)));
        }
        return await work(new ProgressReport(command, null, plain ?? Console.Error, TimeSpan.FromSeconds(Math.Max(0, options.IntervalSeconds))));
    }

    /// <summary>"12,345 of 1,000,000 events"</summary>
    private sealed class DoneColumn : ProgressColumn
    {
        public override IRenderable Render(RenderOptions options, ProgressTask task, TimeSpan deltaTime) =>
            new Text(task.Tag is ProgressStage stage ? stage.Counted(task.Value) : "");
    }

    /// <summary>"34,567 events/s"</summary>
    private sealed class RateColumn : ProgressColumn
    {
        public override IRenderable Render(RenderOptions options, ProgressTask task, TimeSpan deltaTime) =>
            new Text(task.Tag is ProgressStage stage && (task.IsFinished ? stage.AverageRate : task.Speed) is { } rate and > 0
                ? $"{rate.ToString("N0", CultureInfo.InvariantCulture)} {stage.Unit}/s" : "");
    }
}

/// <summary>What long work tells <see cref="LongWork"/>: the stage it is in and how far along it is.</summary>
public sealed class ProgressReport
{
    private readonly string _command;
    private readonly ProgressContext? _display;
    private readonly TextWriter? _plain;
    private readonly TimeSpan _interval;

    internal ProgressReport(string command, ProgressContext? display, TextWriter? plain, TimeSpan interval)
    {
        _command = command;
        _display = display;
        _plain = plain;
        _interval = interval;
    }

    /// <summary>A stage of <paramref name="total"/> units (events, runs, documents); complete it when it is done.</summary>
    public ProgressStage Stage(string description, long total, string unit = "events")
    {
        var task = _display?.AddTask(description, autoStart: true, maxValue: Math.Max(1, total));
        var stage = new ProgressStage(this, description, total, unit, task);
        if (task is not null) task.Tag = stage;
        return stage;
    }

    internal void Line(string text)
    {
        if (_plain is null) return;
        lock (_plain) _plain.WriteLine($"{_command}: {text}");
    }

    internal TimeSpan Interval => _interval;
    internal bool Plain => _plain is not null;
}

/// <summary>One stage of long work: advance it as units are done.</summary>
public sealed class ProgressStage
{
    private readonly ProgressReport _report;
    private readonly ProgressTask? _task;
    private readonly long _started = Stopwatch.GetTimestamp();
    private long _lastLine;
    private bool _completed;

    internal ProgressStage(ProgressReport report, string description, long total, string unit, ProgressTask? task)
    {
        _report = report;
        _task = task;
        Description = description;
        Total = total;
        Unit = unit;
        _lastLine = _started;
    }

    public string Description { get; }
    public long Total { get; private set; }
    public string Unit { get; }
    public long Done { get; private set; }

    private TimeSpan Elapsed => Stopwatch.GetElapsedTime(_started);

    /// <summary>Units per second since the stage started.</summary>
    public double? AverageRate => Elapsed.TotalSeconds > 0 && Done > 0 ? Done / Elapsed.TotalSeconds : null;

    internal string Counted(double done) => Total > 0
        ? $"{N(done)} of {N(Total)} {Unit}"
        : $"{N(done)} {Unit}";

    /// <summary>Sets how many units are done (never more than the total, which grows if the work found more).</summary>
    public void Report(long done)
    {
        Done = done;
        if (done > Total)
        {
            Total = done;
            if (_task is not null) _task.MaxValue = done;
        }
        if (_task is not null) _task.Value = done;
        if (_report.Plain && Stopwatch.GetElapsedTime(_lastLine) >= _report.Interval && !_completed)
        {
            _lastLine = Stopwatch.GetTimestamp();
            _report.Line($"{Description}: {Counted(done)}{Percent()}{Rate()}{Left()}");
        }
    }

    public void Advance(long by) => Report(Done + by);

    /// <summary>The stage is done: its bar is full, and a plain line says how long it took.</summary>
    public void Complete()
    {
        if (_completed) return;
        _completed = true;
        if (_task is not null)
        {
            _task.MaxValue = Math.Max(1, Done);
            _task.Value = _task.MaxValue;
            _task.StopTask();
        }
        _report.Line($"{Description}: {N(Done)} {Unit} in {Seconds(Elapsed)}{Rate()}");
    }

    private string Percent() => Total > 0 ? $" ({Math.Min(100, 100.0 * Done / Total).ToString("0", CultureInfo.InvariantCulture)}%)" : "";

    private string Rate() => AverageRate is { } rate ? $", {N(rate)} {Unit}/s" : "";

    private string Left() => AverageRate is { } rate && Total > Done ? $", about {Seconds(TimeSpan.FromSeconds((Total - Done) / rate))} left" : "";

    private static string N(double value) => value.ToString("N0", CultureInfo.InvariantCulture);

    private static string Seconds(TimeSpan t) => t.TotalSeconds switch
    {
        < 10 => $"{t.TotalSeconds.ToString("0.0", CultureInfo.InvariantCulture)} s",
        < 120 => $"{t.TotalSeconds.ToString("0", CultureInfo.InvariantCulture)} s",
        < 7200 => $"{(int)t.TotalMinutes} min {t.Seconds} s",
        _ => $"{(int)t.TotalHours} h {t.Minutes} min",
    };
}
