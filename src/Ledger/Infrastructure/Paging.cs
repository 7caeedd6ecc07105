namespace Ledger.Infrastructure;

public static class Paging
{
    public const int DefaultPageSize = 50;
    public const int MaxPageSize = 500;
    /// <summary>The deepest row a page may start at: far past any listing a person reads, far below an overflow.</summary>
    public const int MaxOffset = 10_000_000;

    /// <summary>1-based page and a size of 1..500; anything else is a 422 naming the parameter, so a reader can never ask for an unbounded page.</summary>
    public static (int Page, int PageSize) Normalize(int? page, int? pageSize)
    {
        var size = pageSize ?? DefaultPageSize;
        if (size is < 1 or > MaxPageSize) throw Refusal("pageSize", $"Between 1 and {MaxPageSize}.");
        var number = page ?? 1;
        var maxPage = MaxOffset / size + 1;
        if (number < 1 || number > maxPage) throw Refusal("page", $"Between 1 and {maxPage} for a page size of {size}.");
        return (number, size);
    }

    private static ProblemException Refusal(string field, string message) =>
        new(RequestBody.Invalid(new Dictionary<string, string[]> { [field] = [message] }));
}
