using FluentValidation;
using Ledger.Contract;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Ledger.Labels;
using Ledger.Runs;
using Marten;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Wolverine.Http;

namespace Ledger.Batches;

/// <summary>
/// A fan-out job and the runs it expects: by run id, by explicit label sets, and/or by a matrix
/// of label values expanded to its cross product (model x region x question).
/// </summary>
public sealed record DefineBatch
{
    public string? Id { get; init; }
    public string? Title { get; init; }
    public List<string>? RunIds { get; init; }
    public List<Dictionary<string, string>>? LabelSets { get; init; }
    public LabelMatrix? Matrix { get; init; }

    /// <summary><c>{"labels": {"model": ["a", "b"], "region": ["EU", "US"]}}</c>: every combination is expected.</summary>
    public sealed record LabelMatrix
    {
        public Dictionary<string, List<string>>? Labels { get; init; }
    }

    /// <summary>How many runs the request expects, counted without expanding the matrix (saturates).</summary>
    public long Size()
    {
        long matrix = 0;
        if (Matrix?.Labels is { Count: > 0 } labels)
        {
            matrix = 1;
            foreach (var values in labels.Values) matrix = Math.Min(matrix * (values?.Count ?? 0), int.MaxValue);
        }
        return (RunIds?.Count ?? 0) + (LabelSets?.Count ?? 0) + matrix;
    }

    /// <summary>The expected runs, label values normalized: run ids, then label sets, then the matrix (first key slowest).</summary>
    public List<ExpectedRun> Expand(LabelVocabulary vocabulary)
    {
        var expected = new List<ExpectedRun>();
        expected.AddRange((RunIds ?? []).Select(id => new ExpectedRun(RunId: id)));
        expected.AddRange((LabelSets ?? []).Select(set => new ExpectedRun(Labels: vocabulary.NormalizeLeniently(set))));
        if (Matrix?.Labels is { Count: > 0 } matrix)
        {
            IEnumerable<Dictionary<string, string>> product = [new Dictionary<string, string>(StringComparer.Ordinal)];
            foreach (var (key, values) in matrix)
            {
                product = product.SelectMany(partial => values.Select(value => new Dictionary<string, string>(partial, StringComparer.Ordinal)
                {
                    [key] = vocabulary.Normalize(key, value).Value,
                }));
            }
            expected.AddRange(product.Select(labels => new ExpectedRun(Labels: labels)));
        }
        return expected;
    }

    public sealed class Validator : AbstractValidator<DefineBatch>
    {
        public Validator(IOptions<BatchOptions> options, LabelVocabulary vocabulary)
        {
            var max = options.Value.MaxExpectedRuns;

            RuleFor(b => b.Id).NotEmpty().Matches(Identifiers.Pattern).WithMessage(Identifiers.Message);
            RuleFor(b => b.Title!).MaximumLength(InputLimits.MaxTitle).When(b => b.Title is not null);
            RuleFor(b => b).Must(b => b.RunIds is { Count: > 0 } || b.LabelSets is { Count: > 0 } || b.Matrix is not null)
                .OverridePropertyName("$")
                .WithMessage("Say which runs the batch expects: runIds, labelSets and/or matrix.");
            RuleFor(b => b).Must(b => b.Size() <= max).OverridePropertyName("$")
                .WithMessage(b => $"A batch expects at most {max} runs; this one expands to {b.Size()}.");

            RuleForEach(b => b.RunIds).NotEmpty().Matches(Identifiers.Pattern).WithMessage(Identifiers.Message);
            RuleForEach(b => b.LabelSets)
                .Must(set => set is { Count: > 0 and <= InputLimits.MaxLabels } && set.All(kv => ValidKey(kv.Key) && ValidValue(kv.Value)))
                .WithMessage($"A label set needs 1-{InputLimits.MaxLabels} labels; keys 1-{InputLimits.MaxLabelKey} characters, values 1-{InputLimits.MaxLabelValue} characters.")
                .Custom((set, context) => vocabulary.Check(set, context.PropertyPath, context));

            RuleFor(b => b.Matrix!.Labels).NotEmpty().OverridePropertyName("matrix.labels")
                .WithMessage("A matrix needs its labels: {\"labels\": {\"region\": [\"EU\", \"US\"], ...}}.")
                .When(b => b.Matrix is not null);
            RuleFor(b => b.Matrix!.Labels!).Custom((matrix, context) => CheckMatrix(matrix, vocabulary, context))
                .When(b => b.Matrix?.Labels is not null);

            RuleFor(b => b).Custom((b, context) =>
            {
                if (b.Size() > max || !WellFormed(b) || MatrixRepeats(b, vocabulary)) return;
                var repeated = b.Expand(vocabulary).GroupBy(e => e.Key).Where(g => g.Count() > 1).Take(5).ToList();
                foreach (var repeat in repeated)
                {
                    context.AddFailure("$", $"Expected twice (after label normalization): {repeat.First().Describe()}. Name each expected run once.");
                }
            });
        }

        private static bool ValidKey(string? key) => key is { Length: > 0 and <= InputLimits.MaxLabelKey };
        private static bool ValidValue(string? value) => value is { Length: > 0 and <= InputLimits.MaxLabelValue };

        private static void CheckMatrix(Dictionary<string, List<string>> matrix, LabelVocabulary vocabulary, ValidationContext<DefineBatch> context)
        {
            if (matrix.Count > InputLimits.MaxLabels) context.AddFailure("matrix.labels", $"A matrix has at most {InputLimits.MaxLabels} label keys.");
            foreach (var (key, values) in matrix)
            {
                var path = $"matrix.labels.{key}";
                if (!ValidKey(key)) context.AddFailure(path, $"Label keys must be 1-{InputLimits.MaxLabelKey} characters.");
                if (values is not { Count: > 0 })
                {
                    context.AddFailure(path, "List at least one value for each key of the matrix.");
                    continue;
                }
                var seen = new Dictionary<string, string>(StringComparer.Ordinal);
                for (var i = 0; i < values.Count; i++)
                {
                    var value = values[i];
                    if (!ValidValue(value))
                    {
                        context.AddFailure($"{path}[{i}]", $"Label values must be 1-{InputLimits.MaxLabelValue} characters.");
                        continue;
                    }
                    var normalized = vocabulary.Normalize(key, value);
                    if (normalized.RefusedWithAllowed is { } allowed)
                    {
                        context.AddFailure(LabelVocabulary.Refusal($"{path}[{i}]", key, value, allowed));
                    }
                    else if (!seen.TryAdd(normalized.Value, value))
                    {
                        context.AddFailure($"{path}[{i}]", $"'{value}' and '{seen[normalized.Value]}' are the same {key} ({normalized.Value}).");
                    }
                }
            }
        }

        private static bool WellFormed(DefineBatch b) =>
            (b.RunIds ?? []).All(id => id is not null)
            && (b.LabelSets ?? []).All(set => set is { Count: > 0 } && set.All(kv => ValidKey(kv.Key) && ValidValue(kv.Value)))
            && (b.Matrix?.Labels ?? []).All(kv => ValidKey(kv.Key) && kv.Value is { Count: > 0 } && kv.Value.All(ValidValue));

        private static bool MatrixRepeats(DefineBatch b, LabelVocabulary vocabulary) =>
            (b.Matrix?.Labels ?? []).Any(kv => kv.Value.Select(v => vocabulary.Normalize(kv.Key, v).Value).Distinct(StringComparer.Ordinal).Count() < kv.Value.Count);
    }
}

public static class DefineBatchEndpoint
{
    [WolverinePost("/api/batches", Name = "DefineBatch")]
    [JsonBody(typeof(DefineBatch))]
    [Accepts(Credential.AdminKey)]
    [Refuses(ProblemCodes.BatchExists)]
    [Tags("Batches")]
    [EndpointSummary("Define a fan-out batch and the runs it expects, by run id and/or labels (admin key)")]
    [ProducesResponseType<Batch>(201), ProducesResponseType<Batch>(200)]
    public static async Task<IResult> Post(HttpContext context, RequestGate gate, RejectionLog rejections,
        IValidator<DefineBatch> validator, IDocumentStore store, TimeProvider clock, LabelVocabulary vocabulary)
    {
        var admission = await gate.Admit<DefineBatch>(context, validator, [Role.Admin]);
        if (admission.Refusal is not null) return admission.Refusal;
        var request = admission.Request!;

        var batch = new Batch { Id = request.Id!, Title = request.Title, Expected = request.Expand(vocabulary), CreatedAt = clock.GetUtcNow() };
        await using var session = store.LightweightSession();
        if (await session.LoadAsync<Batch>(batch.Id, context.RequestAborted) is { } existing)
        {
            return await Redefined(existing);
        }

        session.Insert(batch);
        try
        {
            await session.SaveAsync(context.RequestAborted);
        }
        catch (Exception e) when (IsDuplicateId(e))
        {
            await using var query = store.QuerySession();
            return await Redefined((await query.LoadAsync<Batch>(batch.Id, context.RequestAborted))!);
        }

        context.Response.Headers.Location = $"/api/batches/{Uri.EscapeDataString(batch.Id)}";
        return Results.Json(batch, LedgerJson.Options, statusCode: 201);

        // Defining the same batch again is a harmless retry; changing what it expects would rewrite its history.
        async Task<IResult> Redefined(Batch existing) => existing.SameDefinition(batch)
            ? Results.Json(existing, LedgerJson.Options)
            : await rejections.Refuse(context, Problem.Of(ProblemCodes.BatchExists,
                $"Batch '{batch.Id}' was defined at {existing.CreatedAt:O} expecting {existing.Expected.Count} runs; batches are immutable, define a new one."), admission.Raw);
    }

    private static bool IsDuplicateId(Exception e) => e switch
    {
        Npgsql.PostgresException { SqlState: Npgsql.PostgresErrorCodes.UniqueViolation } => true,
        _ when e.InnerException is not null => IsDuplicateId(e.InnerException),
        _ => false,
    };
}
