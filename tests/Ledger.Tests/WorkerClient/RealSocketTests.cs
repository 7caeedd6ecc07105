using System.Net;
using System.Net.Sockets;
using Ledger.Client;
using Ledger.Tests.Fixtures;
using Ledger.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace Ledger.Tests.WorkerClient;

/// <summary>
/// The client as an application runs it: the ledger as a process of its own, reached over TCP
/// through the default SocketsHttpHandler, with a proxy in between that can cut a connection
/// after the ledger has answered (a reset, as when a load balancer or the network drops it).
/// </summary>
public sealed class RealSocketTests
{
    private const string AdminKey = "socket-test-admin-key";

    [Fact]
    public async Task a_connection_reset_after_the_ledger_recorded_an_event_is_retried_on_a_new_connection_and_answered_duplicate()
    {
        var (server, database, name) = TestDatabase.Create();
        try
        {
            using var ledger = LedgerProcess.Start(new Dictionary<string, string?>
            {
                ["ASPNETCORE_ENVIRONMENT"] = "Production",
                ["Ledger__AdminKey"] = AdminKey,
                ["ConnectionStrings__Ledger"] = database,
                ["Ledger__Janitor__Enabled"] = "false",
                ["Ledger__DaemonMode"] = "Disabled",
            }, ["--urls", "http://127.0.0.1:0"], Directory.GetCurrentDirectory());
            var address = new Uri(await ledger.WaitForAddress(TimeSpan.FromSeconds(90)));
            await using var proxy = CuttingProxy.Start(address);

            var services = new ServiceCollection();
            var requests = 0;
            services.AddLedgerClient(o =>
            {
                o.BaseAddress = proxy.Address;
                o.Key = AdminKey;
                o.Resilience.RetryDelay = TimeSpan.FromMilliseconds(50);
            }).AddHttpMessageHandler(() => new CountingHandler(() => Interlocked.Increment(ref requests)));
            await using var provider = services.BuildServiceProvider();
            var client = provider.GetRequiredService<LedgerClient>();

            var runId = await client.RegisterAsync(new RunRegistration { LeaseSeconds = 30, ExpectedItems = 7 });
            await using var run = await client.ClaimAsync(runId, "socket-worker");
            // No interval was configured: a third of the lease, measured on the ledger's clock (its Date header).
            Assert.InRange(run.HeartbeatInterval, TimeSpan.FromSeconds(8), TimeSpan.FromSeconds(10.5));

            var before = Volatile.Read(ref requests);
            proxy.CutNextAnswer();
            var answer = await run.CommitItemsAsync("chunk-1", 7);

            Assert.Equal(1, proxy.Cuts);
            Assert.Equal(2, Volatile.Read(ref requests) - before); // the cut attempt and its retry
            Assert.Equal(EventResults.Duplicate, answer.Results.Single().Result);
            var state = await client.GetRunAsync(runId);
            Assert.Equal(7, state.Json.GetProperty("items").GetProperty("committed").GetInt64());
            Assert.Equal(1, state.Json.GetProperty("items").GetProperty("chunks").GetInt32());
            ledger.Terminate(TimeSpan.FromSeconds(30));
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            TestDatabase.Drop(server, name);
        }
    }

    private sealed class CountingHandler(Action onSend) : DelegatingHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
        {
            onSend();
            return base.SendAsync(request, ct);
        }
    }

    /// <summary>A TCP proxy; when armed, it lets the next request through and resets the connection instead of answering.</summary>
    private sealed class CuttingProxy : IAsyncDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private readonly Uri _target;
        private readonly CancellationTokenSource _stop = new();
        private int _armed;
        private int _cuts;
        private Task _accepting = Task.CompletedTask;

        private CuttingProxy(Uri target) => _target = target;

        public static CuttingProxy Start(Uri target)
        {
            var proxy = new CuttingProxy(target);
            proxy._listener.Start();
            proxy._accepting = proxy.AcceptAsync();
            return proxy;
        }

        public Uri Address => new($"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}/");
        public int Cuts => Volatile.Read(ref _cuts);
        public void CutNextAnswer() => Volatile.Write(ref _armed, 1);

        private async Task AcceptAsync()
        {
            var connections = new List<Task>();
            try
            {
                while (!_stop.IsCancellationRequested)
                {
                    var client = await _listener.AcceptTcpClientAsync(_stop.Token);
                    connections.Add(RelayAsync(client));
                }
            }
            catch (OperationCanceledException)
            {
            }
            await Task.WhenAll(connections);
        }

        private async Task RelayAsync(TcpClient client)
        {
            using var _ = client;
            using var upstream = new TcpClient();
            try
            {
                await upstream.ConnectAsync(_target.Host, _target.Port, _stop.Token);
                var toServer = client.GetStream().CopyToAsync(upstream.GetStream(), _stop.Token);
                var buffer = new byte[64 * 1024];
                var fromServer = upstream.GetStream();
                while (true)
                {
                    var read = await fromServer.ReadAsync(buffer, _stop.Token);
                    if (read == 0) break;
                    if (Interlocked.CompareExchange(ref _armed, 0, 1) == 1)
                    {
                        // The ledger has answered; the worker never hears it: reset the worker's connection.
                        Interlocked.Increment(ref _cuts);
                        client.Client.LingerState = new LingerOption(true, 0);
                        client.Client.Close();
                        return;
                    }
                    await client.GetStream().WriteAsync(buffer.AsMemory(0, read), _stop.Token);
                }
                await toServer;
            }
            catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
            {
                // A connection ended or was cut.
            }
        }

        public async ValueTask DisposeAsync()
        {
            _stop.Cancel();
            _listener.Stop();
            await _accepting;
        }
    }
}
