using Ledger.Client;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

public static class LedgerClientServiceCollectionExtensions
{
    /// <summary>
    /// Registers <see cref="LedgerClient"/> on a named HttpClient of <c>IHttpClientFactory</c>
    /// (<see cref="LedgerClient.HttpClientName"/>) with the ledger's resilience pipeline.
    /// Returns the HttpClient's builder, so that a caller can add handlers of its own (they run
    /// inside the pipeline, once per attempt) or change the primary handler.
    /// </summary>
    public static IHttpClientBuilder AddLedgerClient(this IServiceCollection services, Action<LedgerClientOptions> configure)
    {
        services.AddOptions<LedgerClientOptions>()
            .Configure(configure)
            .Validate(o => o.BaseAddress is { IsAbsoluteUri: true }, "LedgerClientOptions.BaseAddress must be an absolute URI.")
            .Validate(o => !string.IsNullOrWhiteSpace(o.Key), "LedgerClientOptions.Key is required.")
            .Validate(o => !string.IsNullOrWhiteSpace(o.Worker), "LedgerClientOptions.Worker must not be empty.");
        services.TryAddSingleton<LedgerClient>();

        var builder = services.AddHttpClient(LedgerClient.HttpClientName, (provider, http) =>
        {
            var options = provider.GetRequiredService<IOptions<LedgerClientOptions>>().Value;
            var address = options.BaseAddress!.ToString();
            // Relative paths resolve below the whole base address, a path prefix included.
            http.BaseAddress = new Uri(address.EndsWith('/') ? address : address + "/");
            // The pipeline's total timeout bounds a call; HttpClient's own would cut retries short.
            http.Timeout = Timeout.InfiniteTimeSpan;
        });
        builder.AddResilienceHandler(LedgerResilience.PipelineName, (pipeline, context) =>
            LedgerResilience.Configure(pipeline,
                context.ServiceProvider.GetRequiredService<IOptions<LedgerClientOptions>>().Value.Resilience));
        return builder;
    }
}
