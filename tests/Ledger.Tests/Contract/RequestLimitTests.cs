using System.Text.Json.Nodes;
using FluentValidation;
using Ledger.Batches;
using Ledger.Contract;
using Ledger.Infrastructure;
using Ledger.Leaderboards;
using Ledger.Runs;
using Ledger.Tests.Fixtures;
using Ledger.Webhooks;
using Microsoft.Extensions.DependencyInjection;

namespace Ledger.Tests.Contract;

/// <summary>
/// Each limit of a request is one named constant (<see cref="InputLimits"/>, the worker events'
/// validator): the served API description states it, and the validator refuses one past it while
/// taking the value at it. A literal in either place that parts from the constant fails here.
/// </summary>
public sealed class RequestLimitTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private static readonly DateTimeOffset When = DateTimeOffset.UnixEpoch;

    /// <summary>
    /// A limit: where the description states it (a schema of components, then a path under its
    /// properties), the constant, and a request of the given size that the validator judges.
    /// </summary>
    /// <param name="Least">A least size (minLength): the value at it is taken, one below it refused.</param>
    private sealed record Limit(string Schema, string Path, int Constant, Func<int, object> Request, bool Least = false)
    {
        public override string ToString() => $"{Schema}{Path}";
    }

    private sealed record Pattern(string Schema, string Path, string Constant, object Valid, object Invalid)
    {
        public override string ToString() => $"{Schema}{Path}";
    }

    private static readonly Limit[] Limits =
    [
        new("RegisterRun", "/participant/maxLength", InputLimits.MaxName, n => new RegisterRun { Participant = S(n) }),
        new("RegisterRun", "/labels/maxProperties", InputLimits.MaxLabels, n => new RegisterRun { Labels = Labels(n) }),
        new("RegisterRun", "/labels/propertyNames/maxLength", InputLimits.MaxLabelKey, n => new RegisterRun { Labels = new() { [S(n)] = "v" } }),
        new("RegisterRun", "/labels/additionalProperties/maxLength", InputLimits.MaxLabelValue, n => new RegisterRun { Labels = new() { ["k"] = S(n) } }),
        new("RegisterRun", "/requiredScores/maxItems", InputLimits.MaxRequiredNames, n => new RegisterRun { RequiredScores = Distinct(n) }),
        new("RegisterRun", "/requiredScores/items/maxLength", InputLimits.MaxName, n => new RegisterRun { RequiredScores = [S(n)] }),
        new("RegisterRun", "/requiredOutputs/maxItems", InputLimits.MaxRequiredNames, n => new RegisterRun { RequiredOutputs = Distinct(n) }),
        new("RegisterRun", "/requiredOutputs/items/maxLength", InputLimits.MaxName, n => new RegisterRun { RequiredOutputs = [S(n)] }),
        new("ClaimRun", "/worker/maxLength", InputLimits.MaxName, n => new ClaimRun { Worker = S(n) }),
        new("ClaimRun", "/claimId/maxLength", InputLimits.MaxName, n => new ClaimRun { ClaimId = S(n) }),
        new("CancelRun", "/reason/maxLength", InputLimits.MaxReason, n => new CancelRun { Reason = S(n) }),
        new("ReclassifyRun", "/reason/maxLength", InputLimits.MaxReason, n => Reclassify with { Reason = S(n) }),
        new("ReclassifyRun", "/evidence/maxItems", InputLimits.MaxEvidence, n => Reclassify with { Evidence = Distinct(n) }),
        new("ReclassifyRun", "/evidence/items/maxLength", InputLimits.MaxReason, n => Reclassify with { Evidence = [S(n)] }),
        new("ReclassifyRun", "/operator/maxLength", InputLimits.MaxName, n => Reclassify with { Operator = S(n) }),
        new("RecordObservation", "/source/maxLength", InputLimits.MaxName, n => Observation with { Source = S(n) }),
        new("RecordObservation", "/detail/maxLength", RecordObservation.MaxDetail, n => Observation with { Detail = S(n) }),
        new("DefineBoard", "/title/maxLength", InputLimits.MaxTitle, n => Board with { Title = S(n) }),
        new("DefineBoard", "/primaryScore/maxLength", InputLimits.MaxName, n => Board with { PrimaryScore = S(n) }),
        new("DefineBoard", "/tieBreakScore/maxLength", InputLimits.MaxName, n => Board with { TieBreakScore = S(n) }),
        new("DefineBatch", "/title/maxLength", InputLimits.MaxTitle, n => Batch with { Title = S(n) }),
        new("DefineBatch", "/labelSets/items/maxProperties", InputLimits.MaxLabels, n => Batch with { RunIds = null, LabelSets = [Labels(n)] }),
        new("DefineBatch", "/labelSets/items/propertyNames/maxLength", InputLimits.MaxLabelKey, n => Batch with { RunIds = null, LabelSets = [new() { [S(n)] = "v" }] }),
        new("DefineBatch", "/labelSets/items/additionalProperties/maxLength", InputLimits.MaxLabelValue, n => Batch with { RunIds = null, LabelSets = [new() { ["k"] = S(n) }] }),

        new("CreateSubscription", "/url/maxLength", CreateSubscription.MaxUrl, n => Subscription with { Url = Hook + S(n - Hook.Length) }),
        new("CreateSubscription", "/secret/minLength", CreateSubscription.MinSecret, n => Subscription with { Secret = S(n) }, Least: true),
        new("CreateSubscription", "/secret/maxLength", CreateSubscription.MaxSecret, n => Subscription with { Secret = S(n) }),

        new("RunStartedEvent", "/eventId/maxLength", WorkerEventRequest.Validator.MaxId, n => Event(WorkerEventTypes.RunStarted) with { EventId = S(n) }),
        new("StepStartedEvent", "/stepId/maxLength", WorkerEventRequest.Validator.MaxId, n => Event(WorkerEventTypes.StepStarted) with { StepId = S(n) }),
        new("StepStartedEvent", "/name/maxLength", WorkerEventRequest.Validator.MaxId, n => Event(WorkerEventTypes.StepStarted) with { StepId = "s", Name = S(n) }),
        new("StepCompletedEvent", "/stepId/maxLength", WorkerEventRequest.Validator.MaxId, n => Event(WorkerEventTypes.StepCompleted) with { StepId = S(n) }),
        new("StepCompletedEvent", "/outcome/maxLength", WorkerEventRequest.Validator.MaxOutcome, n => Event(WorkerEventTypes.StepCompleted) with { StepId = "s", Outcome = S(n) }),
        new("LogEvent", "/lines/maxItems", WorkerEventRequest.Validator.MaxLines, n => Event(WorkerEventTypes.Log) with { Lines = Enumerable.Repeat("l", n).ToList() }),
        new("LogEvent", "/lines/items/maxLength", WorkerEventRequest.Validator.MaxLineLength, n => Event(WorkerEventTypes.Log) with { Lines = [S(n)] }),
        new("ScoresReportedEvent", "/scores/maxProperties", WorkerEventRequest.Validator.MaxScores,
            n => Event(WorkerEventTypes.ScoresReported) with { Scores = Enumerable.Range(0, n).ToDictionary(i => $"s{i}", _ => 1.0) }),
        new("ScoresReportedEvent", "/scores/propertyNames/maxLength", InputLimits.MaxName, n => Event(WorkerEventTypes.ScoresReported) with { Scores = new() { [S(n)] = 1.0 } }),
        new("OutputRecordedEvent", "/name/maxLength", WorkerEventRequest.Validator.MaxId, n => Output with { Name = S(n) }),
        new("OutputRecordedEvent", "/uri/maxLength", WorkerEventRequest.Validator.MaxUri, n => Output with { Uri = "s3://b/" + S(n - "s3://b/".Length) }),
        new("ItemsCommittedEvent", "/chunkId/maxLength", WorkerEventRequest.Validator.MaxId, n => Event(WorkerEventTypes.ItemsCommitted) with { ChunkId = S(n), Count = 1 }),
        new("RunCompletedEvent", "/warnings/maxItems", WorkerEventRequest.Validator.MaxWarnings, n => Event(WorkerEventTypes.RunCompleted) with { Warnings = Enumerable.Repeat("w", n).ToList() }),
        new("RunFailedEvent", "/message/maxLength", WorkerEventRequest.Validator.MaxText, n => Event(WorkerEventTypes.RunFailed) with { ErrorClass = ErrorClasses.Unknown, Message = S(n) }),
    ];

    private static readonly Pattern[] Patterns =
    [
        new("OutputRecordedEvent", "/sha256/pattern", WorkerEventRequest.Validator.Sha256Pattern,
            Output with { Sha256 = new string('a', 64) }, Output with { Sha256 = new string('a', 63) + "g" }),
        new("RunCompletedEvent", "/warnings/items/pattern", WorkerEventRequest.Validator.WarningPattern,
            Event(WorkerEventTypes.RunCompleted) with { Warnings = ["empty-output"] }, Event(WorkerEventTypes.RunCompleted) with { Warnings = ["Empty output"] }),
    ];

    [Fact]
    public async Task the_served_description_states_each_limit_as_its_constant()
    {
        var schemas = JsonNode.Parse(await ledger.Host.Server.CreateClient().GetStringAsync("/openapi/v1.json"))!["components"]!["schemas"]!;
        var wrong = new List<string>();
        foreach (var limit in Limits)
        {
            var stated = At(schemas, limit.Schema, limit.Path);
            if (stated?.GetValue<long>() != limit.Constant) wrong.Add($"{limit}: described as {stated?.ToJsonString() ?? "nothing"}, the constant is {limit.Constant}");
        }
        foreach (var pattern in Patterns)
        {
            var stated = At(schemas, pattern.Schema, pattern.Path);
            if (stated?.GetValue<string>() != pattern.Constant) wrong.Add($"{pattern}: described as {stated?.ToJsonString() ?? "nothing"}, the constant is {pattern.Constant}");
        }
        Assert.True(wrong.Count == 0, "The description and the constants differ:\n  " + string.Join("\n  ", wrong));
    }

    [Fact]
    public void each_validator_takes_a_value_at_its_limit_and_refuses_one_past_it()
    {
        var wrong = new List<string>();
        foreach (var limit in Limits)
        {
            var past = limit.Least ? limit.Constant - 1 : limit.Constant + 1;
            if (Refused(limit.Request(limit.Constant)) is { } refusal) wrong.Add($"{limit}: {limit.Constant} is refused ({refusal})");
            if (Refused(limit.Request(past)) is null) wrong.Add($"{limit}: {past} is taken");
        }
        foreach (var pattern in Patterns)
        {
            if (Refused(pattern.Valid) is { } refusal) wrong.Add($"{pattern}: a matching value is refused ({refusal})");
            if (Refused(pattern.Invalid) is null) wrong.Add($"{pattern}: a value that does not match is taken");
        }
        Assert.True(wrong.Count == 0, "The validators and the constants differ:\n  " + string.Join("\n  ", wrong));
    }

    [Fact]
    public void the_table_reaches_every_request_schema_with_a_limit()
    {
        // A request type whose limits no row names would escape both checks.
        string[] constrained = ["RegisterRun", "ClaimRun", "CancelRun", "ReclassifyRun", "RecordObservation", "DefineBoard", "DefineBatch", "CreateSubscription",
            "RunStartedEvent", "StepStartedEvent", "StepCompletedEvent", "LogEvent", "ScoresReportedEvent", "OutputRecordedEvent",
            "ItemsCommittedEvent", "RunCompletedEvent", "RunFailedEvent"];
        Assert.Equal(constrained.Order(), Limits.Select(l => l.Schema).Concat(Patterns.Select(p => p.Schema)).Distinct().Order());
    }

    /// <summary>The validator's failures for the request, or null when it takes it.</summary>
    private string? Refused(object request)
    {
        var validator = (IValidator)ledger.Host.Services.GetRequiredService(typeof(IValidator<>).MakeGenericType(request.GetType()));
        var result = validator.Validate(new ValidationContext<object>(request));
        return result.IsValid ? null : string.Join("; ", result.Errors.Select(e => $"{e.PropertyName}: {e.ErrorMessage}"));
    }

    private static JsonNode? At(JsonNode schemas, string schema, string path)
    {
        var node = schemas[schema]?["properties"];
        foreach (var segment in path.Split('/', StringSplitOptions.RemoveEmptyEntries)) node = node?[segment];
        return node;
    }

    private static string S(int n) => new('a', n);
    private static List<string> Distinct(int n) => Enumerable.Range(0, n).Select(i => $"n{i}").ToList();
    private static Dictionary<string, string> Labels(int n) => Enumerable.Range(0, n).ToDictionary(i => $"k{i}", _ => "v");

    private static ReclassifyRun Reclassify => new() { Status = RunStatus.Failed, Reason = "r", Evidence = ["e"] };
    private static RecordObservation Observation => new() { Source = "s", Status = "lost", ObservedAt = When };
    private static DefineBoard Board => new() { Id = "b", PrimaryScore = "p", Direction = Direction.Max };
    private static DefineBatch Batch => new() { Id = "b", RunIds = ["r1"] };
    private const string Hook = "https://hooks.example.com/";
    private static CreateSubscription Subscription => new() { Url = Hook + "ledger", Kinds = ["run.lost"], Secret = "a-secret-of-sixteen-or-more" };
    private static WorkerEventRequest Event(string type) => new() { Type = type, EventId = "e", OccurredAt = When };
    private static WorkerEventRequest Output => Event(WorkerEventTypes.OutputRecorded) with { Name = "o", Uri = "s3://b/o" };
}
