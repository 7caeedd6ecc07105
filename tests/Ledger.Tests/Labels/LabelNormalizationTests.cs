using System.Net;
using Ledger.Labels;
using Ledger.Tests.Fixtures;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Labels;

/// <summary>Label values through the configured alias table and closed vocabulary (appsettings.json: region).</summary>
public sealed class LabelNormalizationTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    [Theory]
    [InlineData("eu-west", "EU")]
    [InlineData("EU-West", "EU")]
    [InlineData(" europe ", "EU")]
    [InlineData("EU", "EU")]
    [InlineData("eu", "EU")]
    [InlineData("us-east", "US")]
    [InlineData("ap-southeast", "APAC")]
    [InlineData("Apac", "APAC")]
    public async Task a_region_is_stored_by_its_canonical_name(string sent, string stored)
    {
        var runId = await _api.Register(new { runId = NewRunId(), labels = new Dictionary<string, string> { ["region"] = sent, ["model"] = "mistral-7b" } });

        var run = await _api.Run(runId);
        Assert.Equal(stored, run["labels"]!["region"]!.GetValue<string>());
        Assert.Equal("mistral-7b", run["labels"]!["model"]!.GetValue<string>());
    }

    [Fact]
    public async Task the_registration_event_keeps_the_labels_as_sent_when_they_were_normalized()
    {
        var runId = await _api.Register(new { runId = NewRunId(), labels = new { region = "eu-west" } });

        var history = await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/events", LedgerHost.ReadKey);
        var registered = history.Json!["events"]!.AsArray()[0]!["data"]!;
        Assert.Equal("EU", registered["labels"]!["region"]!.GetValue<string>());
        Assert.Equal("eu-west", registered["labelsAsSent"]!["region"]!.GetValue<string>());
    }

    [Fact]
    public async Task labels_without_rules_are_kept_exactly_as_sent()
    {
        var runId = await _api.Register(new { runId = NewRunId(), labels = new { model = "Qwen2.5-1.5B ", question = "taiwan_status" } });

        var run = await _api.Run(runId);
        Assert.Equal("Qwen2.5-1.5B ", run["labels"]!["model"]!.GetValue<string>());
        Assert.Equal("taiwan_status", run["labels"]!["question"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("mars")]
    [InlineData("eu-north-7")]
    public async Task a_value_outside_the_closed_vocabulary_is_a_422_with_the_allowed_values_and_no_run(string region)
    {
        var runId = NewRunId();
        var response = await _api.Send(HttpMethod.Post, "/api/runs", LedgerHost.AdminKey,
            new { runId, labels = new { region, model = "mistral-7b" } });

        Assert.Equal(HttpStatusCode.UnprocessableEntity, response.Status);
        Assert.Equal("application/problem+json", response.ContentType);
        Assert.Equal("invalid-payload", response.ProblemCode);
        Assert.False(response.Retryable);
        var errors = response.Json!["errors"]!.AsObject();
        Assert.Equal(["labels.region"], response.ErrorFields);
        Assert.Contains("EU, US, APAC", errors["labels.region"]![0]!.GetValue<string>());
        Assert.Equal(["EU", "US", "APAC"], response.Json!["allowed"]!.AsArray().Select(a => a!.GetValue<string>()));
        Assert.Equal(HttpStatusCode.NotFound, (await _api.GetRun(runId)).Status);
    }
}

/// <summary>The vocabulary alone: no host.</summary>
public sealed class LabelVocabularyTests
{
    private static readonly LabelRules Rules = new()
    {
        ["region"] = new LabelRule { Aliases = new() { ["eu-west"] = "EU", ["us"] = "US" }, Allowed = ["EU", "US"] },
        ["tier"] = new LabelRule { Aliases = new() { ["gold"] = "premium" } },
    };

    [Fact]
    public void aliases_resolve_case_insensitively_and_a_closed_vocabulary_fixes_the_spelling()
    {
        var vocabulary = new LabelVocabulary(Rules);

        Assert.Equal("EU", vocabulary.Normalize("region", "EU-WEST").Value);
        Assert.Equal("EU", vocabulary.Normalize("region", "eu").Value);
        Assert.Equal("EU", vocabulary.Normalize("Region", "eu-west").Value);
        Assert.False(vocabulary.Normalize("region", "eu").Refused);
    }

    [Fact]
    public void an_open_vocabulary_resolves_aliases_and_keeps_every_other_value()
    {
        var vocabulary = new LabelVocabulary(Rules);

        Assert.Equal("premium", vocabulary.Normalize("tier", "GOLD").Value);
        Assert.Equal("silver", vocabulary.Normalize("tier", "silver").Value);
        Assert.Null(vocabulary.AllowedFor("tier"));
    }

    [Fact]
    public void a_value_outside_a_closed_vocabulary_is_refused_with_the_allowed_values()
    {
        var normalized = new LabelVocabulary(Rules).Normalize("region", "apac");

        Assert.True(normalized.Refused);
        Assert.Equal(["EU", "US"], normalized.RefusedWithAllowed);
    }

    [Fact]
    public void an_alias_that_points_outside_the_closed_vocabulary_is_a_configuration_mistake()
    {
        var rules = new LabelRules { ["region"] = new LabelRule { Aliases = new() { ["ap-southeast"] = "APAC" }, Allowed = ["EU", "US"] } };

        var mistake = Assert.Single(LabelVocabulary.Misconfigurations(rules));
        Assert.Contains("ap-southeast", mistake);
        Assert.Empty(LabelVocabulary.Misconfigurations(Rules));
    }
}
