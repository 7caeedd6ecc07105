using Ledger.Infrastructure;
using Microsoft.Extensions.Hosting.Internal;

namespace Ledger.Tests.Infrastructure;

/// <summary>Outside Development, keys shorter than 16 characters and a trusting private PostgreSQL are refused at start (the checks themselves).</summary>
public sealed class KeyLengthTests
{
    private static LedgerOptions Options(string admin = "an-admin-key-of-22-chr", string? secret = null, string[]? workers = null, string[]? readers = null) => new()
    {
        AdminKey = admin, LeaseTokenSecret = secret, WorkerKeys = [.. workers ?? []], ReadKeys = [.. readers ?? []],
    };

    private static IReadOnlyList<string> Failures(string environment, LedgerOptions options) =>
        new LedgerOptionsValidation(new HostingEnvironment { EnvironmentName = environment }).Validate(null, options).Failures?.ToList() ?? [];

    [Theory]
    [InlineData("Production")]
    [InlineData("Staging")]
    public void each_short_key_is_named_and_never_shown(string environment)
    {
        var failures = Failures(environment, Options("fifteen-chars-k", "short-secret", ["a-worker-key-long-enough", "w-short"], ["", "r-short"]));
        var failure = Assert.Single(failures);
        Assert.StartsWith("Ledger:AdminKey, Ledger:LeaseTokenSecret, Ledger:WorkerKeys:1, Ledger:ReadKeys:1 are shorter than 16 characters", failure);
        foreach (var secret in new[] { "fifteen-chars-k", "short-secret", "w-short", "r-short" }) Assert.DoesNotContain(secret, failure);
    }

    [Fact]
    public void sixteen_characters_pass_and_development_keeps_its_short_keys()
    {
        Assert.Empty(Failures("Production", Options("sixteen-chars-ok", "sixteen-chars-ok", ["sixteen-chars-ok"], ["sixteen-chars-ok", " "])));
        Assert.Empty(Failures("Development", Options("dev-admin-key", "s", ["dev-worker-key"], ["dev-read-key"])));
    }

    [Fact]
    public void a_trusting_private_postgres_is_for_development_only()
    {
        var options = Options();
        options.EmbeddedPostgres.TrustLocalConnections = true;
        Assert.Contains(Failures("Production", options), f => f.StartsWith("Ledger:EmbeddedPostgres:TrustLocalConnections"));
        Assert.Empty(Failures("Development", options));
    }
}
