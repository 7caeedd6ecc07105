using System.Reflection;
using Ledger.Contract;

namespace Ledger.Tests.Forensics;

/// <summary>The one anomaly vocabulary (<see cref="AnomalyKinds"/>): its list is every kind it names, once.</summary>
public sealed class AnomalyKindsTests
{
    [Fact]
    public void the_list_of_kinds_is_every_kind_the_vocabulary_names_once()
    {
        // A kind added as a constant but left out of All would be missing from the API description's enum and the console's filter.
        var named = typeof(AnomalyKinds).GetFields(BindingFlags.Public | BindingFlags.Static)
            .Where(f => f.IsLiteral && f.FieldType == typeof(string))
            .Select(f => (string)f.GetRawConstantValue()!)
            .ToList();

        Assert.NotEmpty(named);
        Assert.Equal(named.Order(StringComparer.Ordinal), AnomalyKinds.All.Order(StringComparer.Ordinal));
        Assert.Equal(AnomalyKinds.All.Count, AnomalyKinds.All.Distinct().Count());
        Assert.All(AnomalyKinds.All, k => Assert.Matches("^[a-z]+(-[a-z]+)*$", k));
    }
}
