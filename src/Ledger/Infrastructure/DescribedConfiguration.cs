using System.Text.RegularExpressions;

namespace Ledger.Infrastructure;

/// <summary>
/// <c>describe</c> prints the whole configuration, every provider's value for every key, the
/// process environment included. Before it runs, the configuration is replaced by one flat copy
/// whose secret values (keys, passwords, tokens, connection strings) read "(hidden)", so the
/// output can be pasted into a ticket.
/// </summary>
public static partial class DescribedConfiguration
{
    public const string Hidden = "(hidden)";

    public static bool IsDescribeCommand(string[] args) => args.Length > 0 && args[0].Equals("describe", StringComparison.OrdinalIgnoreCase);

    /// <summary>Whether a setting's value is a secret, by its path: Ledger:AdminKey, Ledger:WorkerKeys:0, ConnectionStrings:Ledger, AWS_SECRET_ACCESS_KEY...</summary>
    public static bool IsSecret(string path) => SecretPath().IsMatch(path);

    public static void HideSecrets(ConfigurationManager configuration)
    {
        var copy = configuration.AsEnumerable()
            .Where(setting => setting.Value is not null)
            .Select(setting => new KeyValuePair<string, string?>(setting.Key, IsSecret(setting.Key) ? Hidden : setting.Value))
            .ToList();
        ((IConfigurationBuilder)configuration).Sources.Clear();
        configuration.AddInMemoryCollection(copy);
    }

    [GeneratedRegex("key|secret|password|passwd|pwd|token|credential|connectionstring", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex SecretPath();
}
