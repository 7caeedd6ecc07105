using FluentValidation;
using Ledger.Contract;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Ledger.Runs;
using Marten;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Wolverine.Http;

namespace Ledger.Leaderboards;

public enum Direction { Max, Min }

/// <summary>How a board ranks: copied into each run at registration, so a run is ranked as it was entered.</summary>
public sealed record Ranking(string PrimaryScore, Direction Direction, string? TieBreakScore, Direction TieBreakDirection);

/// <summary>A leaderboard scope. Configuration, not history: boards are documents, their results are projections.</summary>
public sealed class Board
{
    public string Id { get; set; } = "";
    public string? Title { get; set; }
    public required Ranking Ranking { get; set; }
    public DateTimeOffset CreatedAt { get; set; }
}

public sealed record DefineBoard
{
    public string? Id { get; init; }
    public string? Title { get; init; }
    public string? PrimaryScore { get; init; }
    public Direction? Direction { get; init; }
    public string? TieBreakScore { get; init; }
    public Direction? TieBreakDirection { get; init; }

    public Ranking ToRanking() => new(PrimaryScore!, Direction!.Value, TieBreakScore, TieBreakDirection ?? Leaderboards.Direction.Max);

    public sealed class Validator : AbstractValidator<DefineBoard>
    {
        public Validator()
        {
            RuleFor(b => b.Id).NotEmpty().Matches(Identifiers.Pattern).WithMessage(Identifiers.Message);
            RuleFor(b => b.Title!).MaximumLength(InputLimits.MaxTitle).When(b => b.Title is not null);
            RuleFor(b => b.PrimaryScore).NotEmpty().MaximumLength(InputLimits.MaxName).Printable();
            RuleFor(b => b.Direction).NotNull().WithMessage("direction must be 'max' or 'min'.");
            RuleFor(b => b.TieBreakScore!).NotEmpty().MaximumLength(InputLimits.MaxName).Printable()
                .NotEqual(b => b.PrimaryScore).WithMessage("The tie-break score must differ from the primary score.")
                .When(b => b.TieBreakScore is not null);
            RuleFor(b => b.TieBreakDirection).Null().When(b => b.TieBreakScore is null)
                .WithMessage("tieBreakDirection needs a tieBreakScore.");
        }
    }
}

public static class BoardEndpoints
{
    [WolverinePost("/api/boards", Name = "DefineBoard")]
    [JsonBody(typeof(DefineBoard))]
    [Accepts(Credential.AdminKey)]
    [Refuses(ProblemCodes.BoardExists)]
    [Tags("Leaderboards")]
    [EndpointSummary("Define a leaderboard scope: primary score, direction, optional tie-break (admin key)")]
    [ProducesResponseType<Board>(201), ProducesResponseType<Board>(200)]
    public static async Task<IResult> Post(HttpContext context, RequestGate gate, RejectionLog rejections,
        IValidator<DefineBoard> validator, IDocumentStore store, TimeProvider clock)
    {
        var admission = await gate.Admit<DefineBoard>(context, validator, [Role.Admin]);
        if (admission.Refusal is not null) return admission.Refusal;
        var request = admission.Request!;

        var board = new Board { Id = request.Id!, Title = request.Title, Ranking = request.ToRanking(), CreatedAt = clock.GetUtcNow() };
        await using var session = store.LightweightSession();
        var existing = await session.LoadAsync<Board>(board.Id, context.RequestAborted);
        if (existing is not null)
        {
            // Defining the same board again is a harmless retry; redefining it would re-rank history.
            return existing.Ranking == board.Ranking
                ? Results.Json(existing, LedgerJson.Options)
                : await rejections.Refuse(context, Problem.Of(ProblemCodes.BoardExists,
                    $"Board '{board.Id}' ranks by {existing.Ranking.PrimaryScore} ({existing.Ranking.Direction.ToString().ToLowerInvariant()}); boards are immutable."), admission.Raw);
        }

        session.Insert(board);
        try
        {
            await session.SaveAsync(context.RequestAborted);
        }
        catch (Exception e) when (e.ToString().Contains("23505"))
        {
            return await rejections.Refuse(context, Problem.Of(ProblemCodes.BoardExists,
                $"Board '{board.Id}' was defined concurrently; read it with GET /api/boards/{board.Id}."), admission.Raw);
        }
        context.Response.Headers.Location = $"/api/boards/{Uri.EscapeDataString(board.Id)}";
        return Results.Json(board, LedgerJson.Options, statusCode: 201);
    }

    [WolverineGet("/api/boards/{id}", Name = "GetBoard")]

    [Accepts(Credential.AdminKey, Credential.ReadKey)]

    [Refuses(ProblemCodes.BoardNotFound)]
    [Tags("Leaderboards")]
    [EndpointSummary("A board's definition (admin or read key)")]
    [ProducesResponseType<Board>(200)]
    public static async Task<IResult> Get(string id, HttpContext context, Access access, BoardCatalog boards)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        var board = await boards.Find(id, context.RequestAborted);
        return board is null ? BoardNotFound(id).ToResult() : Results.Json(board, LedgerJson.Options);
    }

    public static Problem BoardNotFound(string id) =>
        Problem.Of(ProblemCodes.BoardNotFound, $"No board '{id}' is defined; define it with POST /api/boards.");
}
