using System.Text;
using System.Text.RegularExpressions;

namespace Ledger.Tests.Readme;

/// <summary>
/// A fenced code block of a README, with the marker written on the line above it:
/// <c>&lt;!-- example: NAME --&gt;</c> (a test runs it) or <c>&lt;!-- not run: WHY --&gt;</c>.
/// </summary>
public sealed record Example(string File, int Line, string Language, string Text, string? Name, string? NotRun)
{
    public override string ToString() => $"{File}:{Line} ({Language}{(Name is null ? "" : ", " + Name)})";
}

/// <summary>
/// What a README shows and says it prints. A <c># →</c> comment states what a command prints: at
/// the end of the command's last line, or on the line right after it (only the command's own
/// output is checked); a <c># →</c> line after a blank or a plain comment is checked against
/// everything the block printed so far. What follows the arrow is a list of fragments separated
/// by ", " (outside quotes and brackets), each of which must appear in the output, <c>…</c> or
/// <c>...</c> standing for any text on the same line.
/// </summary>
public static partial class ReadmeExamples
{
    /// <summary>Fenced blocks in these languages are examples: each needs a marker.</summary>
    public static readonly IReadOnlySet<string> RunnableLanguages = new HashSet<string> { "bash", "sh", "python", "ts", "csharp" };

    public static IReadOnlyList<Example> Blocks(string path, string name)
    {
        var lines = File.ReadAllLines(path);
        var blocks = new List<Example>();
        for (var i = 0; i < lines.Length; i++)
        {
            var fence = Fence().Match(lines[i]);
            if (!fence.Success) continue;
            var language = fence.Groups[1].Value;
            var start = i;
            var body = new StringBuilder();
            for (i++; i < lines.Length && lines[i].TrimEnd() != "```"; i++) body.Append(lines[i]).Append('\n');
            var marker = start > 0 ? lines[start - 1].Trim() : "";
            var example = ExampleMarker().Match(marker);
            var notRun = NotRunMarker().Match(marker);
            blocks.Add(new Example(name, start + 1, language, body.ToString(),
                example.Success ? example.Groups[1].Value.Trim() : null, notRun.Success ? notRun.Groups[1].Value.Trim() : null));
        }
        return blocks;
    }

    /// <summary>A command of a bash block (a line, or several joined by a trailing backslash or an open quote), with what it says it prints.</summary>
    public sealed record Command(int Line, string Text, List<string> Expected);

    /// <summary>A check of everything a block printed up to this point.</summary>
    public sealed record Check(int Line, int AfterCommand, List<string> Expected);

    public static (IReadOnlyList<Command> Commands, IReadOnlyList<Check> Checks) Parse(Example example)
    {
        var commands = new List<Command>();
        var checks = new List<Check>();
        var lines = example.Text.Split('\n');
        var justEnded = false;
        for (var i = 0; i < lines.Length; i++)
        {
            var trimmed = lines[i].Trim();
            if (trimmed.Length == 0)
            {
                justEnded = false;
                continue;
            }
            if (trimmed.StartsWith('#'))
            {
                if (Arrow(trimmed) is { } said)
                {
                    if (justEnded) commands[^1].Expected.AddRange(Fragments(said));
                    else checks.Add(new Check(example.Line + 1 + i, commands.Count, Fragments(said)));
                }
                else
                {
                    justEnded = false;
                }
                continue;
            }

            var first = i;
            var text = new StringBuilder();
            char? quote = null;
            string? comment = null;
            while (true)
            {
                var line = lines[i];
                var code = line;
                for (var c = 0; c < line.Length; c++)
                {
                    var ch = line[c];
                    if (quote is null && ch == '#' && (c == 0 || char.IsWhiteSpace(line[c - 1])))
                    {
                        code = line[..c];
                        comment = line[c..];
                        break;
                    }
                    if (quote is null && ch == '\\' && c + 1 < line.Length) { c++; continue; }
                    if (quote == '"' && ch == '\\' && c + 1 < line.Length) { c++; continue; }
                    if (quote is null && ch is '\'' or '"') quote = ch;
                    else if (quote == ch) quote = null;
                }
                text.Append(line).Append('\n');
                if (quote is null && !code.TrimEnd().EndsWith('\\')) break;
                if (++i >= lines.Length) throw new InvalidOperationException($"{example}: a command from line {example.Line + 1 + first} never ends");
            }
            var expected = comment is not null && Arrow(comment) is { } says ? Fragments(says) : [];
            commands.Add(new Command(example.Line + 1 + first, text.ToString().TrimEnd('\n'), expected));
            justEnded = true;
        }
        return (commands, checks);
    }

    /// <summary>The expectations of a whole block (a Python example's <c># →</c> comments), in order.</summary>
    public static List<string> Expectations(Example example) =>
        example.Text.Split('\n').Select(l => l.IndexOf('#') is var at and >= 0 ? l[at..] : "")
            .Select(Arrow).Where(s => s is not null).SelectMany(s => Fragments(s!)).ToList();

    private static string? Arrow(string comment)
    {
        var at = comment.IndexOf('→');
        return at < 0 ? null : comment[(at + 1)..].Trim();
    }

    /// <summary>"a, b" is two fragments; a comma inside quotes or brackets is not a separator.</summary>
    public static List<string> Fragments(string said)
    {
        var fragments = new List<string>();
        var depth = 0;
        var inQuote = false;
        var start = 0;
        for (var i = 0; i < said.Length; i++)
        {
            var ch = said[i];
            if (ch == '"') inQuote = !inQuote;
            else if (!inQuote && ch is '[' or '{' or '(') depth++;
            else if (!inQuote && ch is ']' or '}' or ')') depth--;
            else if (!inQuote && depth == 0 && ch == ',' && i + 1 < said.Length && said[i + 1] == ' ')
            {
                fragments.Add(said[start..i].Trim());
                start = i + 2;
            }
        }
        fragments.Add(said[start..].Trim());
        return fragments.Where(f => f.Length > 0).ToList();
    }

    /// <summary>The fragment as a pattern: literal text, <c>…</c> or <c>...</c> being any text on one line.</summary>
    public static bool Shows(string output, string fragment)
    {
        var parts = fragment.Split(["…", "..."], StringSplitOptions.None).Select(Regex.Escape);
        return Regex.IsMatch(output, string.Join(@"[^\n]*?", parts));
    }

    [GeneratedRegex(@"^```(\w+)\s*$")]
    private static partial Regex Fence();

    [GeneratedRegex(@"^<!--\s*example:\s*(.+?)\s*-->$")]
    private static partial Regex ExampleMarker();

    [GeneratedRegex(@"^<!--\s*not run:\s*(.+?)\s*-->$")]
    private static partial Regex NotRunMarker();
}
