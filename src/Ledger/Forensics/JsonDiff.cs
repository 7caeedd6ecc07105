using System.Text.Json.Nodes;

namespace Ledger.Forensics;

/// <summary>Names the first members where two JSON documents differ, for a readable verify report.</summary>
public static class JsonDiff
{
    public static string Describe(string live, string rebuilt, int max = 5)
    {
        var differences = new List<string>();
        Walk("", JsonNode.Parse(live), JsonNode.Parse(rebuilt), differences, max);
        return differences.Count == 0 ? "(same content, different encoding)" : string.Join("; ", differences);
    }

    /// <summary>True when the two documents hold the same members and values, whatever the order of the members.</summary>
    public static bool Same(string a, string b)
    {
        var differences = new List<string>();
        Walk("", JsonNode.Parse(a), JsonNode.Parse(b), differences, 1);
        return differences.Count == 0;
    }

    private static void Walk(string path, JsonNode? live, JsonNode? rebuilt, List<string> differences, int max)
    {
        if (differences.Count >= max) return;
        if (live is JsonObject l && rebuilt is JsonObject r)
        {
            foreach (var key in l.Select(p => p.Key).Union(r.Select(p => p.Key)))
            {
                Walk(path.Length == 0 ? key : $"{path}.{key}", l[key], r[key], differences, max);
            }
            return;
        }
        if (live is JsonArray la && rebuilt is JsonArray ra && la.Count == ra.Count)
        {
            for (var i = 0; i < la.Count; i++) Walk($"{(path.Length == 0 ? "$" : path)}[{i}]", la[i], ra[i], differences, max);
            return;
        }
        if (live is JsonArray lc && rebuilt is JsonArray rc)
        {
            differences.Add($"{(path.Length == 0 ? "$" : path)} live has {lc.Count} items, rebuilt {rc.Count}: live={Short(live)} rebuilt={Short(rebuilt)}");
            return;
        }
        if (!JsonNode.DeepEquals(live, rebuilt))
        {
            differences.Add($"{(path.Length == 0 ? "$" : path)} live={Short(live)} rebuilt={Short(rebuilt)}");
        }
    }

    private static string Short(JsonNode? node)
    {
        var text = node?.ToJsonString() ?? "absent";
        return text.Length > 80 ? text[..77] + "..." : text;
    }
}
