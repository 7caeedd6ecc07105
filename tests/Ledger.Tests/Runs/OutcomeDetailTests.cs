using System.Net;
using Ledger.Tests.Fixtures;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Runs;

/// <summary>A success may carry warnings and stays a success; a failure says what kind of failure it was.</summary>
public sealed class OutcomeDetailTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    private static readonly string[] ErrorClasses = ["timeout", "validation", "provider", "infrastructure", "cancelled", "unknown"];

    [Fact]
    public async Task an_empty_answer_is_a_success_with_an_empty_output_warning()
    {
        var (runId, token) = await _api.Started(new { runId = NewRunId(), requiredOutputs = new[] { "answer" } });

        var response = await _api.Events(runId, token, new[]
        {
            Event("output.recorded", fields: new { name = "answer", uri = "s3://answers/identity_basic.txt", bytes = 0 }),
            Event("run.completed"),
        });

        Assert.Equal(HttpStatusCode.OK, response.Status);
        Assert.Equal("succeeded", response.RunStatus);
        var run = await _api.Run(runId);
        Assert.Equal("succeeded", run["status"]!.GetValue<string>());
        Assert.Null(run["reason"]);
        Assert.Null(run["errorClass"]);
        Assert.Equal(["empty-output"], run["warnings"]!.AsArray().Select(w => w!.GetValue<string>()));
        Assert.Equal(0, run["outputs"]!["answer"]!["bytes"]!.GetValue<long>());
    }

    [Fact]
    public async Task warnings_reported_with_the_completion_are_kept_and_the_run_still_succeeds()
    {
        var (runId, token) = await _api.Started();

        var response = await _api.Events(runId, token,
            Event("run.completed", fields: new { warnings = new[] { "empty-output", "attention-mask-missing", "empty-output" } }));

        Assert.Equal("succeeded", response.RunStatus);
        var run = await _api.Run(runId);
        Assert.Equal(["empty-output", "attention-mask-missing"], run["warnings"]!.AsArray().Select(w => w!.GetValue<string>()));
    }

    [Fact]
    public async Task a_run_without_warnings_shows_an_empty_list()
    {
        var (runId, token) = await _api.Started();
        await _api.Events(runId, token, Event("output.recorded", fields: new { name = "answer", uri = "s3://a/b", bytes = 12 }));
        await _api.Events(runId, token, Event("run.completed"));

        var run = await _api.Run(runId);
        Assert.Equal("succeeded", run["status"]!.GetValue<string>());
        Assert.Empty(run["warnings"]!.AsArray());
    }

    [Theory]
    [InlineData("timeout")]
    [InlineData("validation")]
    [InlineData("provider")]
    [InlineData("infrastructure")]
    [InlineData("cancelled")]
    [InlineData("unknown")]
    public async Task every_error_class_of_the_closed_list_is_taken_and_shown(string errorClass)
    {
        var (runId, token) = await _api.Started();

        var response = await _api.Events(runId, token, Event("run.failed", fields: new { errorClass, message = "details" }));

        Assert.Equal("failed", response.RunStatus);
        var run = await _api.Run(runId);
        Assert.Equal(errorClass, run["errorClass"]!.GetValue<string>());
        Assert.Equal(errorClass, run["reason"]!.GetValue<string>());
        Assert.Equal("details", run["errorMessage"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("oom")]
    [InlineData("Timeout")]
    [InlineData("EMPTY_MODEL_RESPONSE")]
    public async Task an_error_class_outside_the_closed_list_is_a_422_with_the_allowed_list_and_nothing_is_recorded(string errorClass)
    {
        var (runId, token) = await _api.Started();

        var response = await _api.Events(runId, token, new[] { Event("heartbeat"), Event("run.failed", fields: new { errorClass }) });

        Assert.Equal(HttpStatusCode.UnprocessableEntity, response.Status);
        Assert.Equal("invalid-payload", response.ProblemCode);
        Assert.False(response.Retryable);
        Assert.Equal(["[1].errorClass"], response.ErrorFields);
        Assert.Equal(ErrorClasses, response.Json!["allowed"]!.AsArray().Select(a => a!.GetValue<string>()));
        var run = await _api.Run(runId);
        Assert.Equal("claimed", run["status"]!.GetValue<string>());
        Assert.Equal(2, run["version"]!.GetValue<long>());
    }

    [Theory]
    [InlineData("Empty Output")]
    [InlineData("")]
    public async Task a_warning_that_is_not_a_short_code_is_a_422(string warning)
    {
        var (runId, token) = await _api.Started();

        var response = await _api.Events(runId, token, Event("run.completed", fields: new { warnings = new[] { warning } }));

        Assert.Equal(HttpStatusCode.UnprocessableEntity, response.Status);
        Assert.Equal("invalid-payload", response.ProblemCode);
        Assert.Equal(["warnings[0]"], response.ErrorFields);
        Assert.Equal("claimed", (await _api.Run(runId))["status"]!.GetValue<string>());
    }
}
