using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Ledger.Tests.Fixtures;

/// <summary>
/// Under the test harness the host is the harness's: stopping it stops every hosted service once,
/// and nothing else stops or disposes it meanwhile. (The entry point once ran JasperFx's run
/// command, which stopped and disposed the host from its own thread on the harness's stop signal,
/// while the harness was still stopping it: a hosted service then met a disposed container, and a
/// class's cleanup failed with an ObjectDisposedException.)
/// </summary>
public sealed class HarnessStopTests
{
    private sealed class StopProbe : IHostedService
    {
        public int Stops;
        public int DisposedWhileStopping;
        public IServiceProvider? Services;

        public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public async Task StopAsync(CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref Stops);
            // A hosted service slow to stop, as Wolverine's or the daemon's can be: the container must outlive it.
            await Task.Delay(500, CancellationToken.None);
            try { Services!.GetRequiredService<TimeProvider>(); }
            catch (ObjectDisposedException) { Interlocked.Increment(ref DisposedWhileStopping); }
        }
    }

    [Fact]
    public async Task stopping_a_harness_host_stops_each_service_once_on_a_container_still_alive()
    {
        var probe = new StopProbe();
        var ledger = LedgerHost.With(new Dictionary<string, string>(), services =>
            services.AddSingleton<IHostedService>(sp => { probe.Services = sp; return probe; }));
        await ledger.InitializeAsync();
        await ledger.DisposeAsync();

        Assert.Equal(1, probe.Stops);
        Assert.Equal(0, probe.DisposedWhileStopping);
    }
}
