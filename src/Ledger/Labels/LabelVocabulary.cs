using FluentValidation;
using FluentValidation.Results;
using Ledger.Infrastructure;

namespace Ledger.Labels;

/// <summary>One label key's rules, bound from <c>Ledger:Labels:&lt;key&gt;</c>.</summary>
public sealed class LabelRule
{
    /// <summary>alias -> canonical value ('eu-west' -> 'EU'); aliases match case-insensitively.</summary>
    public Dictionary<string, string> Aliases { get; set; } = new();
    /// <summary>When set, the closed vocabulary: any other value is refused with this list.</summary>
    public List<string>? Allowed { get; set; }
}

/// <summary>A label value normalized, or refused because it lies outside its key's closed vocabulary.</summary>
public readonly record struct NormalizedLabel(string Value, IReadOnlyList<string>? RefusedWithAllowed)
{
    public bool Refused => RefusedWithAllowed is not null;
}

/// <summary>
/// Label values as the ledger compares them: each key's aliases resolved and its closed vocabulary
/// enforced, so that 'eu-west', 'EU' and 'europe' are one region everywhere (registration, batch
/// expectations, batch matching). Keys without rules keep their values exactly as sent.
/// </summary>
public sealed class LabelVocabulary
{
    public const string Section = "Ledger:Labels";

    private readonly Dictionary<string, Rule> _rules;

    private sealed record Rule(Dictionary<string, string> Aliases, Dictionary<string, string>? Allowed, IReadOnlyList<string>? AllowedInOrder);

    public LabelVocabulary(IReadOnlyDictionary<string, LabelRule> rules)
    {
        // Configuration keys are case-insensitive, so a rule's key is too.
        _rules = new Dictionary<string, Rule>(StringComparer.OrdinalIgnoreCase);
        foreach (var (key, rule) in rules)
        {
            var allowed = rule.Allowed is { Count: > 0 } list
                ? list.Select(v => v.Trim()).Distinct(StringComparer.OrdinalIgnoreCase).ToDictionary(v => v, v => v, StringComparer.OrdinalIgnoreCase)
                : null;
            var aliases = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
            foreach (var (alias, canonical) in rule.Aliases) aliases[alias.Trim()] = canonical.Trim();
            _rules[key] = new Rule(aliases, allowed, allowed?.Values.ToList());
        }
    }

    public static LabelVocabulary Empty { get; } = new(new Dictionary<string, LabelRule>());

    /// <summary>The configuration's mistakes, for start-up validation: an alias pointing outside the closed vocabulary.</summary>
    public static IEnumerable<string> Misconfigurations(IReadOnlyDictionary<string, LabelRule> rules)
    {
        foreach (var (key, rule) in rules)
        {
            if (rule.Allowed is { } allowed && allowed.Any(string.IsNullOrWhiteSpace))
            {
                yield return $"{Section}:{key}:Allowed has an empty value.";
            }
            foreach (var (alias, canonical) in rule.Aliases)
            {
                if (string.IsNullOrWhiteSpace(canonical))
                {
                    yield return $"{Section}:{key}:Aliases:{alias} maps to an empty value.";
                }
                else if (rule.Allowed is { Count: > 0 } closed && !closed.Contains(canonical.Trim(), StringComparer.OrdinalIgnoreCase))
                {
                    yield return $"{Section}:{key}:Aliases:{alias} maps to '{canonical}', which is not among the allowed values ({string.Join(", ", closed)}).";
                }
            }
        }
    }

    /// <summary>The allowed values of a key with a closed vocabulary, else null.</summary>
    public IReadOnlyList<string>? AllowedFor(string key) => _rules.TryGetValue(key, out var rule) ? rule.AllowedInOrder : null;

    public NormalizedLabel Normalize(string key, string value)
    {
        if (!_rules.TryGetValue(key, out var rule)) return new NormalizedLabel(value, null);

        var trimmed = value.Trim();
        var canonical = rule.Aliases.TryGetValue(trimmed, out var target) ? target : trimmed;
        if (rule.Allowed is null) return new NormalizedLabel(canonical, null);
        // A closed vocabulary also fixes the spelling: 'eu' becomes 'EU'.
        return rule.Allowed.TryGetValue(canonical, out var spelled)
            ? new NormalizedLabel(spelled, null)
            : new NormalizedLabel(value, rule.AllowedInOrder);
    }

    /// <summary>Every value normalized; a value outside a closed vocabulary is kept as sent (read side: never refuses).</summary>
    public Dictionary<string, string> NormalizeLeniently(IReadOnlyDictionary<string, string> labels)
    {
        var normalized = new Dictionary<string, string>(labels.Count, StringComparer.Ordinal);
        foreach (var (key, value) in labels) normalized[key] = Normalize(key, value).Value;
        return normalized;
    }

    /// <summary>
    /// Adds a failure for each value outside its closed vocabulary, at <paramref name="path"/>.key,
    /// carrying the allowed values so that the 422 lists them.
    /// </summary>
    public void Check<T>(IEnumerable<KeyValuePair<string, string>>? labels, string path, ValidationContext<T> context)
    {
        foreach (var (key, value) in labels ?? [])
        {
            if (key is null || value is null) continue;
            if (Normalize(key, value).RefusedWithAllowed is { } allowed) context.AddFailure(Refusal($"{path}.{key}", key, value, allowed));
        }
    }

    public static ValidationFailure Refusal(string path, string key, string value, IReadOnlyList<string> allowed) =>
        new(path, $"'{value}' is not an allowed {key}; allowed: {string.Join(", ", allowed)}.")
        {
            CustomState = new RequestBody.AllowedValues(allowed),
        };
}
