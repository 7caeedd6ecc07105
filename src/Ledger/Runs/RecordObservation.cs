using FluentValidation;
using Ledger.Contract;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Microsoft.AspNetCore.Mvc;
using Wolverine.Http;

namespace Ledger.Runs;

/// <summary>Another system (an executor, a portal) says what it believes the run's status is.</summary>
public sealed record RecordObservation
{
    /// <summary>Who observed: the system's name, e.g. <c>modal</c> or <c>portal</c>.</summary>
    public string? Source { get; init; }
    /// <summary>The observed status, in the ledger's words (the caller maps its own).</summary>
    public string? Status { get; init; }
    public DateTimeOffset? ObservedAt { get; init; }
    public string? Detail { get; init; }

    public const int MaxDetail = 2000;

    public ObserveCommand ToCommand(string runId) =>
        new(runId, Source!, Enum.Parse<RunStatus>(Status!, ignoreCase: true), ObservedAt!.Value, Detail);

    public sealed class Validator : AbstractValidator<RecordObservation>
    {
        public Validator()
        {
            RuleFor(o => o.Source).NotEmpty().MaximumLength(InputLimits.MaxName).Printable();
            RuleFor(o => o.Status).NotEmpty()
                .Must(s => s is null || RunStatusRules.WireNames.Contains(s))
                .WithMessage($"Unknown status; allowed: {string.Join(", ", RunStatusRules.WireNames)}.")
                .WithState(_ => new RequestBody.AllowedValues(RunStatusRules.WireNames));
            RuleFor(o => o.ObservedAt).NotNull();
            RuleFor(o => o.Detail!).MaximumLength(MaxDetail).When(o => o.Detail is not null);
        }
    }
}

/// <summary>What recording the observation did; <c>mismatch</c> is true when it disagrees with the ledger's verdict now.</summary>
public sealed record ObservationRecorded(string RunId, RunStatus Status, EventResultKind Result, string? Reason, bool Mismatch) : IAnswer;

public static class RecordObservationEndpoint
{
    [WolverinePost("/api/runs/{id}/observations", Name = "RecordObservation")]
    [JsonBody(typeof(RecordObservation))]
    [Accepts(Credential.AdminKey, Credential.WorkerKey)]
    [Refuses(ProblemCodes.RunNotFound, Contended = true)]
    [Tags("Runs")]
    [EndpointSummary("Record another system's view of the run; a disagreeing terminal status is flagged, never adopted (admin or worker key)")]
    [ProducesResponseType<ObservationRecorded>(200)]
    public static async Task<IResult> Post(string id, HttpContext context, RequestGate gate, RejectionLog rejections,
        IValidator<RecordObservation> validator, RunWriter writer)
    {
        var admission = await gate.Admit<RecordObservation>(context, validator, [Role.Admin, Role.Worker], runId: id);
        if (admission.Refusal is not null) return admission.Refusal;
        var request = admission.Request!;

        var decision = await writer.Submit(request.ToCommand(id));
        return await decision.ToHttp(context, rejections, id, admission.Raw, request.Source);
    }
}
