using Microsoft.Extensions.Options;

namespace Ledger.Labels;

/// <summary>The label rules by key, bound from <c>Ledger:Labels</c> (e.g. <c>Ledger:Labels:region:Aliases:eu-west = EU</c>).</summary>
public sealed class LabelRules : Dictionary<string, LabelRule>
{
    public LabelRules() : base(StringComparer.OrdinalIgnoreCase) { }
}

public static class LabelsConfiguration
{
    /// <summary>The label vocabulary, checked at start-up: an alias must point into its key's closed vocabulary.</summary>
    public static IServiceCollection AddLabels(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<LabelRules>().Bind(configuration.GetSection(LabelVocabulary.Section)).ValidateOnStart();
        services.AddSingleton<IValidateOptions<LabelRules>, LabelRulesValidation>();
        services.AddSingleton(provider => new LabelVocabulary(provider.GetRequiredService<IOptions<LabelRules>>().Value));
        return services;
    }

    private sealed class LabelRulesValidation : IValidateOptions<LabelRules>
    {
        public ValidateOptionsResult Validate(string? name, LabelRules options)
        {
            var mistakes = LabelVocabulary.Misconfigurations(options).ToList();
            return mistakes.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(mistakes);
        }
    }
}
