using System.Text;
using System.Text.Json.Nodes;
using Ledger.Forensics;

namespace Ledger.Tests.Forensics;

/// <summary>
/// The one definition of what is secret in a refused request (<see cref="Redaction"/>), on its own:
/// by field, by endpoint, in bodies cut short or malformed, and the known values wherever they occur.
/// </summary>
public sealed class RedactionTests
{
    private const string Secret = "whsec-0123456789abcdef-do-not-leak";
    private const int Keep = 8 * 1024;

    private static Redaction.Result Subscription(string body, int keep = Keep) =>
        Redaction.Payload("POST", "/api/subscriptions", Encoding.UTF8.GetBytes(body), keep);

    [Fact]
    public void a_subscription_body_keeps_everything_but_its_secret_and_the_path_of_its_url()
    {
        var result = Subscription($$"""{"url":"https://hooks.example.com/services/T0/B0/cap-token","kinds":["run.succeded"],"secret":"{{Secret}}"}""");

        var json = JsonNode.Parse(result.Text)!;
        Assert.Equal(Redaction.Mark, json["secret"]!.GetValue<string>());
        Assert.Equal("https://hooks.example.com/" + Redaction.Mark, json["url"]!.GetValue<string>());
        Assert.Equal("run.succeded", json["kinds"]![0]!.GetValue<string>());
        Assert.DoesNotContain(Secret, result.Text);
        Assert.DoesNotContain("cap-token", result.Text);
        Assert.True(result.Changed);
        Assert.False(result.Truncated);
    }

    [Theory]
    [InlineData("secret")]
    [InlineData("leaseToken")]
    [InlineData("lease_token")]
    [InlineData("Authorization")]
    [InlineData("apiKey")]
    [InlineData("key")]
    [InlineData("claimId")]
    [InlineData("clientSecret")]
    [InlineData("password")]
    public void a_secret_named_field_is_redacted_at_any_depth_in_any_body_whatever_its_type(string name)
    {
        var body = $$$"""[{"type":"log","lines":["ok"],"nested":{"{{{name}}}":"{{{Secret}}}","list":[{"{{{name}}}":{"deep":"{{{Secret}}}"}}]}},{"{{{name}}}":12345678}]""";

        var result = Redaction.Payload("POST", "/api/runs/r-1/events", Encoding.UTF8.GetBytes(body), Keep);

        Assert.DoesNotContain(Secret, result.Text);
        Assert.DoesNotContain("12345678", result.Text);
        Assert.Contains("\"lines\":[\"ok\"]", result.Text);
        Assert.NotNull(JsonNode.Parse(result.Text));
    }

    [Theory]
    [InlineData("eventId")]
    [InlineData("chunkId")]
    [InlineData("stepId")]
    [InlineData("sha256")]
    [InlineData("keys")]
    [InlineData("tokenizer")]
    public void ordinary_fields_are_kept(string name)
    {
        var body = $$"""{"{{name}}":"value-kept-as-sent"}""";
        var result = Redaction.Payload("POST", "/api/runs", Encoding.UTF8.GetBytes(body), Keep);
        Assert.Equal(body, result.Text);
        Assert.False(result.Changed);
    }

    [Fact]
    public void the_claim_id_of_a_claim_is_redacted_and_the_worker_kept()
    {
        var result = Redaction.Payload("POST", "/api/runs/run-1/claim", """{"worker":"w-1","claimId":"claim-0001"}"""u8, Keep);
        Assert.Equal($$"""{"worker":"w-1","claimId":"{{Redaction.Mark}}"}""", result.Text);
    }

    [Fact]
    public void a_body_is_redacted_whole_before_it_is_cut_so_no_part_of_a_secret_survives_the_cut()
    {
        // The secret straddles the cut: cutting first and redacting after would keep its first half.
        var padding = new string('x', Keep - 40);
        var result = Subscription($$"""{"kinds":["{{padding}}"],"secret":"{{Secret}}","url":"https://example.com/"}""");

        Assert.True(result.Truncated);
        Assert.True(Encoding.UTF8.GetByteCount(result.Text) <= Keep);
        Assert.DoesNotContain(Secret[..10], result.Text);
    }

    [Fact]
    public void a_body_already_cut_mid_secret_keeps_nothing_of_it_in_a_body_that_carries_secrets()
    {
        // As an earlier version stored it: the first 8 KiB, ending inside the secret.
        var cut = $$"""{"url":"https://example.com/","kinds":["x"],"secret":"{{Secret[..12]}}""";

        var result = Subscription(cut);

        Assert.DoesNotContain(Secret[..12], result.Text);
        Assert.StartsWith("""{"url":"https://example.com/","kinds":["x"],"secret":""", result.Text);
    }

    [Theory]
    [InlineData("""{"url":"https://example.com/","kinds":["x"],"secret":"SECRET" "anomalyKinds":[]}""")]
    [InlineData("""{"url":"https://example.com/","kinds":["x"] "secret":"SECRET"}""")]
    [InlineData("""{"url":"https://example.com/",'secret':'SECRET'}""")]
    [InlineData("""url=https%3A%2F%2Fexample.com%2F&kinds=run.lost&secret=SECRET""")]
    [InlineData("""secret: SECRET""")]
    [InlineData("""{"url":"https://example.com/","secret":SECRET}""")]
    public void a_malformed_subscription_body_keeps_what_parsed_redacted_and_withholds_the_rest(string body)
    {
        var result = Subscription(body.Replace("SECRET", Secret));

        Assert.DoesNotContain(Secret, result.Text);
        Assert.DoesNotContain(Secret[..8], result.Text);
        Assert.True(result.Changed);
    }

    [Theory]
    [InlineData("""
        "{\"url\":\"https://example.com/\",\"kinds\":[\"run.lost\"],\"secret\":\"SECRET\"}"
        """)]
    [InlineData("""["https://example.com/", "SECRET"]""")]
    [InlineData("\"SECRET\"")]
    public void a_subscription_body_that_is_not_an_object_is_not_kept(string body)
    {
        // A client that encodes the body twice sends a string: no member name says where the secret is.
        var result = Subscription(body.Replace("SECRET", Secret));

        Assert.DoesNotContain(Secret[..8], result.Text);
        Assert.Contains("not a JSON object", result.Text);
        Assert.True(result.Changed);
    }

    [Theory]
    [InlineData("""{"note":"\ud800","apiToken":{"v":"SECRET"},"password":["SECRET"]}""")]
    [InlineData("""{"\ud800":1,"apiToken":"SECRET"}""")]
    [InlineData("""{"token":"\udc00SECRET"}""")]
    public void a_string_that_cannot_be_decoded_does_not_end_the_redaction(string body)
    {
        // A lone surrogate escape is refused (422) and kept: the members after it are still redacted, or not kept.
        var result = Redaction.Payload("POST", "/api/runs", Encoding.UTF8.GetBytes(body.Replace("SECRET", Secret)), Keep);

        Assert.DoesNotContain(Secret[..8], result.Text);
        Assert.True(result.Changed);
    }

    [Fact]
    public void json_held_in_a_string_is_redacted_by_field_and_the_rest_kept()
    {
        var inner = new JsonObject { ["apiToken"] = Secret, ["region"] = "eu-west" }.ToJsonString();
        var body = new JsonObject { ["runId"] = "r-embedded", ["config"] = inner }.ToJsonString();

        var result = Redaction.Payload("POST", "/api/runs", Encoding.UTF8.GetBytes(body), Keep);

        Assert.DoesNotContain(Secret[..8], result.Text);
        var kept = JsonNode.Parse(result.Text)!;
        Assert.Equal("r-embedded", kept["runId"]!.GetValue<string>());
        var config = JsonNode.Parse(kept["config"]!.GetValue<string>())!;
        Assert.Equal(("eu-west", Redaction.Mark), (config["region"]!.GetValue<string>(), config["apiToken"]!.GetValue<string>()));

        // Encoded again and again: followed a few levels, then not kept at all.
        var deep = body;
        for (var i = 0; i < 4; i++) deep = new JsonObject { ["wrapped"] = deep }.ToJsonString();
        var deepResult = Redaction.Payload("POST", "/api/runs", Encoding.UTF8.GetBytes(deep), Keep);
        Assert.DoesNotContain(Secret[..8], deepResult.Text);
        Assert.True(deepResult.Changed);
    }

    [Theory]
    [InlineData("""secret=SECRET&url=https://example.com""", "url=https://example.com")]
    [InlineData("""{"runId":"a"} {"secret":"SECRET"}""", """{"runId":"a"}""")]
    [InlineData("""{"runId": "a", "token" : 'SECRET', "x": 1""", "\"runId\": \"a\"")]
    [InlineData("""Authorization: Bearer SECRET""", "Authorization: ")]
    public void a_malformed_body_elsewhere_is_kept_with_the_values_of_secret_names_redacted(string body, string kept)
    {
        var result = Redaction.Payload("POST", "/api/runs", Encoding.UTF8.GetBytes(body.Replace("SECRET", Secret)), Keep);

        Assert.DoesNotContain(Secret, result.Text);
        Assert.Contains(kept, result.Text);
        Assert.Contains(Redaction.Mark, result.Text);
    }

    [Fact]
    public void the_requests_own_credential_and_every_redacted_value_are_taken_out_wherever_they_occur()
    {
        const string token = "lt_the-workers-own-lease-token";
        var body = $$"""[{"type":"log","lines":["using {{token}}","secret was {{Secret}}"]},{"secret":"{{Secret}}"}]""";

        var result = Redaction.Payload("POST", "/api/runs/r/events", Encoding.UTF8.GetBytes(body), Keep, credential: token);

        Assert.DoesNotContain(token, result.Text);
        Assert.DoesNotContain(Secret, result.Text);
        Assert.Contains("using " + Redaction.Mark, result.Text);
        var detail = Redaction.Text($"the value {Secret} and the token {token}", result.Secrets);
        Assert.True(detail.Changed);
        Assert.DoesNotContain(Secret, detail.Text);
        Assert.DoesNotContain(token, detail.Text);
    }

    [Fact]
    public void a_long_body_that_does_not_parse_is_scanned_only_as_far_as_it_is_kept()
    {
        var word = new string('a', 1 << 20);
        var result = Redaction.Payload("POST", "/api/runs", Encoding.UTF8.GetBytes(word + " secret=" + Secret), Keep);
        Assert.Equal(word[..Keep], result.Text);
        Assert.True(result.Truncated);
        Assert.False(result.Changed);
    }

    [Theory]
    [InlineData("https://example.com/", "https://example.com/")]
    [InlineData("https://example.com", "https://example.com")]
    [InlineData("https://example.com:8443/hook?token=x", "https://example.com:8443/[redacted]")]
    [InlineData("https://user:pw@example.com/", "https://example.com/[redacted]")]
    [InlineData("not a url", "[redacted]")]
    public void of_a_subscription_url_only_the_origin_is_kept(string url, string kept) =>
        Assert.Equal(kept, Redaction.Origin(url));

    [Fact]
    public void route_templates_match_one_segment_per_parameter()
    {
        var claim = Redaction.Endpoints.Single(e => e.Route.EndsWith("/claim", StringComparison.Ordinal));
        Assert.True(claim.Matches("POST", "/api/runs/any-run/claim"));
        Assert.True(claim.Matches("post", "/API/runs/any-run/claim/"));
        Assert.False(claim.Matches("POST", "/api/runs/a/b/claim"));
        Assert.False(claim.Matches("GET", "/api/runs/a/claim"));
    }
}
