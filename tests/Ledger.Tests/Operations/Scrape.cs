using System.Globalization;
using System.Net.Http.Headers;
using System.Text.RegularExpressions;
using Alba;

namespace Ledger.Tests.Operations;

/// <summary>One Prometheus text scrape, parsed: each sample's name, labels and value.</summary>
public sealed partial class Scrape
{
    public sealed record Sample(string Name, IReadOnlyDictionary<string, string> Labels, double Value);

    public string Text { get; }
    public IReadOnlyList<Sample> Samples { get; }

    private Scrape(string text)
    {
        Text = text;
        Samples = text.Split('\n').Where(l => l.Length > 0 && l[0] != '#').Select(Parse).ToList();
    }

    public static async Task<Scrape> Of(IAlbaHost host, string key = Fixtures.LedgerHost.ReadKey)
    {
        using var http = host.Server.CreateClient();
        using var request = new HttpRequestMessage(HttpMethod.Get, "/metrics");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        using var response = await http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"/metrics answered {(int)response.StatusCode}: {text}");
        Assert.StartsWith("text/plain", response.Content.Headers.ContentType?.MediaType);
        return new Scrape(text);
    }

    /// <summary>The sum of the samples of a name whose labels include the given ones (0 when there is none).</summary>
    public double Value(string name, params (string Key, string Value)[] labels) =>
        Samples.Where(s => s.Name == name && labels.All(l => s.Labels.TryGetValue(l.Key, out var v) && v == l.Value)).Sum(s => s.Value);

    public bool Has(string name) => Samples.Any(s => s.Name == name);

    private static Sample Parse(string line)
    {
        var match = SampleLine().Match(line);
        Assert.True(match.Success, $"not a Prometheus sample: {line}");
        var labels = LabelPair().Matches(match.Groups["labels"].Value)
            .ToDictionary(m => m.Groups[1].Value, m => Regex.Unescape(m.Groups[2].Value));
        var value = match.Groups["value"].Value switch
        {
            "+Inf" => double.PositiveInfinity,
            "-Inf" => double.NegativeInfinity,
            var v => double.Parse(v, CultureInfo.InvariantCulture),
        };
        return new Sample(match.Groups["name"].Value, labels, value);
    }

    [GeneratedRegex(@"^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?<labels>.*)\})?\s+(?<value>\S+)(\s+\d+)?$")]
    private static partial Regex SampleLine();

    [GeneratedRegex(@"([a-zA-Z_][a-zA-Z0-9_]*)=""((?:[^""\\]|\\.)*)""")]
    private static partial Regex LabelPair();
}
