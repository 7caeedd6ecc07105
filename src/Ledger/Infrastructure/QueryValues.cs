using System.Globalization;
using Ledger.Contract;

namespace Ledger.Infrastructure;

public static class QueryValues
{
    /// <summary>An optional ISO 8601 time from the query string (UTC when no offset is given), or the 422 for it.</summary>
    public static bool TryTime(string? value, string name, out DateTimeOffset? time, out Problem? refusal)
    {
        time = null;
        refusal = null;
        if (value is null) return true;
        if (DateTimeOffset.TryParse(value, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var parsed))
        {
            time = parsed;
            return true;
        }
        refusal = RequestBody.Invalid(new Dictionary<string, string[]> { [name] = ["An ISO 8601 time is required."] });
        return false;
    }
}
