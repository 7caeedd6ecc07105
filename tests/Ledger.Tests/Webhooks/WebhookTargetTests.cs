using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Text;
using CsCheck;
using Ledger.Tests.Fixtures;
using Ledger.Webhooks;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Webhooks;

/// <summary>
/// Webhook targets: an allowlist of global unicast addresses. Tables of the forms the security
/// review found accepted, random addresses from every refused range and inside every IPv6 form
/// that carries IPv4, the machine's own addresses; refused when subscribing and at connect time;
/// no proxy unless configured, and the configured one really used.
/// </summary>
public sealed class WebhookTargetTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    [Theory]
    // IPv4 inside IPv6, as the review sent them (all 127.0.0.1)
    [InlineData("::127.0.0.1")]
    [InlineData("::ffff:0:7f00:1")]
    [InlineData("::ffff:127.0.0.1")]
    [InlineData("64:ff9b::7f00:1")]
    [InlineData("2002:7f00:1::")]
    [InlineData("2001:0:4136:e378:8000:63bf:80ff:fffe")] // Teredo, client 127.0.0.1
    [InlineData("2001:0:7f00:1::1")]                      // Teredo, server 127.0.0.1
    // IANA special-purpose IPv4
    [InlineData("198.18.0.1")]
    [InlineData("198.19.255.254")]
    [InlineData("192.0.0.1")]
    [InlineData("192.0.0.170")]
    [InlineData("192.0.2.1")]
    [InlineData("198.51.100.7")]
    [InlineData("203.0.113.9")]
    [InlineData("192.88.99.1")]
    [InlineData("100.64.0.1")]
    [InlineData("100.127.255.255")]
    [InlineData("0.1.2.3")]
    [InlineData("240.0.0.1")]
    [InlineData("255.255.255.255")]
    [InlineData("224.0.0.251")]
    // IPv6 outside 2000::/3, and the special blocks inside it
    [InlineData("::")]
    [InlineData("::1")]
    [InlineData("100::1")]
    [InlineData("64:ff9b:1::1")]
    [InlineData("fc00::1")]
    [InlineData("fe80::1")]
    [InlineData("fec0::1")]
    [InlineData("ff02::1")]
    [InlineData("2001:db8::1")]
    [InlineData("2001:2::1")]
    [InlineData("2001:10::1")]
    [InlineData("3fff::1")]
    [InlineData("3ffe::1")]
    public void the_forms_the_review_found_and_the_special_ranges_are_not_global_unicast(string address) =>
        Assert.False(WebhookTargets.IsPublic(IPAddress.Parse(address)), address);

    [Theory]
    [InlineData("93.184.215.14")]
    [InlineData("8.8.8.8")]
    [InlineData("192.31.196.1")]   // AS112, globally reachable
    [InlineData("100.128.0.1")]    // just past 100.64.0.0/10
    [InlineData("198.20.0.1")]     // just past 198.18.0.0/15
    [InlineData("2606:4700::1111")]
    [InlineData("2a00:1450:4001::1")]
    [InlineData("::ffff:8.8.8.8")]       // mapped: judged by the IPv4 address
    [InlineData("64:ff9b::808:808")]     // NAT64 of 8.8.8.8
    [InlineData("2002:808:808::1")]      // 6to4 of 8.8.8.8
    public void global_unicast_addresses_and_ipv6_forms_of_global_ipv4_are_allowed(string address) =>
        Assert.True(WebhookTargets.IsPublic(IPAddress.Parse(address)), address);

    private static readonly Gen<IPAddress> RefusedIPv4 =
        Gen.Int[0, WebhookTargets.NotGlobalIPv4.Count - 1].SelectMany(i => RandomIn(WebhookTargets.NotGlobalIPv4[i]));

    private static readonly Gen<IPAddress> AnyIPv4 = Gen.Byte.Array[4].Select(b => new IPAddress(b));

    private static Gen<IPAddress> RandomIn(IPNetwork network) =>
        Gen.Byte.Array[network.BaseAddress.GetAddressBytes().Length].Select(random =>
        {
            var bytes = network.BaseAddress.GetAddressBytes();
            for (var bit = network.PrefixLength; bit < bytes.Length * 8; bit++)
            {
                var mask = (byte)(0x80 >> (bit % 8));
                if ((random[bit / 8] & mask) != 0) bytes[bit / 8] |= mask;
            }
            return new IPAddress(bytes);
        });

    /// <summary>The IPv6 forms that carry an IPv4 address: mapped, NAT64, 6to4, Teredo (as server and as client).</summary>
    private static IEnumerable<IPAddress> Carriers(IPAddress v4)
    {
        var a = v4.GetAddressBytes();
        var mapped = new byte[16]; mapped[10] = mapped[11] = 0xff; a.CopyTo(mapped, 12);
        var nat64 = new byte[16]; nat64[0] = 0x00; nat64[1] = 0x64; nat64[2] = 0xff; nat64[3] = 0x9b; a.CopyTo(nat64, 12);
        var sixToFour = new byte[16]; sixToFour[0] = 0x20; sixToFour[1] = 0x02; a.CopyTo(sixToFour, 2);
        var teredoServer = new byte[16]; teredoServer[0] = 0x20; teredoServer[1] = 0x01; a.CopyTo(teredoServer, 4);
        teredoServer[12] = teredoServer[13] = teredoServer[14] = teredoServer[15] = 0xf7; // client 8.8.8.8, inverted
        var teredoClient = new byte[16]; teredoClient[0] = 0x20; teredoClient[1] = 0x01;
        new byte[] { 8, 8, 8, 8 }.CopyTo(teredoClient, 4);
        for (var i = 0; i < 4; i++) teredoClient[12 + i] = (byte)~a[i];
        var compatible = new byte[16]; a.CopyTo(compatible, 12);
        return new[] { mapped, nat64, sixToFour, teredoServer, teredoClient, compatible }.Select(b => new IPAddress(b));
    }

    [Fact]
    public void every_address_of_every_refused_ipv4_range_is_refused_alone_and_inside_every_ipv6_form() =>
        RefusedIPv4.Sample(v4 =>
        {
            Assert.False(WebhookTargets.IsPublic(v4), v4.ToString());
            foreach (var carrier in Carriers(v4)) Assert.False(WebhookTargets.IsPublic(carrier), $"{carrier} carries {v4}");
        });

    [Fact]
    public void an_ipv4_address_inside_ipv6_is_judged_as_the_ipv4_address_itself() =>
        AnyIPv4.Sample(v4 =>
        {
            var global = WebhookTargets.IsPublic(v4);
            Assert.Equal(global, !WebhookTargets.NotGlobalIPv4.Any(n => n.Contains(v4)));
            var carriers = Carriers(v4).ToList();
            // Mapped, NAT64, 6to4 and both Teredo forms reach the IPv4 address; the deprecated ::a.b.c.d form is never allowed.
            foreach (var carrier in carriers.Take(5)) Assert.True(global == WebhookTargets.IsPublic(carrier), $"{carrier} carries {v4}");
            Assert.False(WebhookTargets.IsPublic(carriers[5]));
        });

    [Fact]
    public void ipv6_is_allowed_only_inside_2000_slash_3_and_outside_its_special_blocks() =>
        Gen.Byte.Array[16].Sample(bytes =>
        {
            var address = new IPAddress(bytes);
            if (WebhookTargets.Embedded(address).Count > 0) return; // judged by the IPv4 address (above)
            var expected = (bytes[0] & 0xe0) == 0x20 && !WebhookTargets.NotGlobalIPv6.Any(n => n.Contains(address));
            Assert.True(expected == WebhookTargets.IsPublic(address), address.ToString());
        });

    [Fact]
    public async Task the_machines_own_addresses_are_refused_even_when_global()
    {
        var own = NetworkInterface.GetAllNetworkInterfaces().SelectMany(i => i.GetIPProperties().UnicastAddresses).Select(u => u.Address).ToList();
        Assert.NotEmpty(own);
        foreach (var address in own)
        {
            Assert.False(WebhookTargets.IsAllowed(address), address.ToString());
            var host = address.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{new IPAddress(address.GetAddressBytes())}]" : address.ToString();
            Assert.NotNull(await WebhookTargets.AddressError(new Uri($"http://{host}:8080/x"), allowPrivate: false, CancellationToken.None));
            if (address.AddressFamily == AddressFamily.InterNetwork)
            {
                Assert.All(Carriers(address).Take(3), c => Assert.True(WebhookTargets.IsOwn(c), $"{c} carries {address}"));
            }
        }
        Assert.False(WebhookTargets.IsOwn(IPAddress.Parse("93.184.215.14")));
    }

    [Fact]
    public async Task a_subscription_to_what_the_review_got_accepted_is_refused()
    {
        await using var strict = await ledger.SecondInstance(new Dictionary<string, string>
        {
            ["Ledger:Webhooks:AllowPrivateTargets"] = "false",
            ["Ledger:DaemonMode"] = "Disabled",
        });
        var api = new Scenarios(ledger, strict);
        foreach (var url in new[]
                 {
                     "http://[::127.0.0.1]:9/x", "http://[::ffff:0:7f00:1]:9/x", "http://[64:ff9b::7f00:1]:9/x", "http://[2002:7f00:1::]:9/x",
                     "http://198.18.0.1/x", "http://192.0.0.1/x", "http://192.0.2.1/x",
                 })
        {
            var refused = await api.Send(HttpMethod.Post, "/api/subscriptions", LedgerHost.AdminKey,
                new { url, kinds = new[] { "run.lost" }, secret = "a-very-secret-value-0123456789" });
            Assert.True(refused.Status == HttpStatusCode.UnprocessableEntity, $"{url}: {refused.Code} {refused.Text}");
            Assert.Equal(["url"], refused.ErrorFields);
            Assert.Contains("not a global unicast address", refused.Text);
        }
    }

    [Fact]
    public void the_sender_uses_no_proxy_and_no_redirect_unless_a_proxy_is_configured()
    {
        var direct = Assert.IsType<SocketsHttpHandler>(WebhookTargets.Handler(new WebhookOptions(), allowPrivate: false));
        Assert.False(direct.UseProxy);
        Assert.False(direct.AllowAutoRedirect);
        Assert.NotNull(direct.ConnectCallback);

        // Development (private targets allowed) keeps the same: no system proxy, no redirects.
        var development = Assert.IsType<SocketsHttpHandler>(WebhookTargets.Handler(new WebhookOptions(), allowPrivate: true));
        Assert.False(development.UseProxy);
        Assert.False(development.AllowAutoRedirect);

        var proxied = WebhookTargets.Handler(new WebhookOptions { Proxy = "http://proxy.internal:3128" }, allowPrivate: false);
        var inner = Assert.IsType<SocketsHttpHandler>(Assert.IsAssignableFrom<DelegatingHandler>(proxied).InnerHandler);
        Assert.True(inner.UseProxy);
        Assert.Equal(new Uri("http://proxy.internal:3128/"), inner.Proxy!.GetProxy(new Uri("http://93.184.215.14/x")));
        Assert.False(inner.AllowAutoRedirect);
    }

    [Fact]
    public async Task at_connect_time_an_address_that_is_not_global_unicast_is_never_connected_to()
    {
        foreach (var host in new[] { "198.18.0.1", "192.0.2.1", "localhost", "::ffff:127.0.0.1", "64:ff9b::7f00:1" })
        {
            var error = await Assert.ThrowsAsync<HttpRequestException>(() => WebhookTargets.ConnectGlobalOnly(new DnsEndPoint(host, 80), CancellationToken.None));
            Assert.Contains("no global unicast address", error.Message);
        }
    }

    [Fact]
    public Task a_target_whose_address_changed_after_subscribing_is_refused_at_connect_time_and_the_attempt_says_why() =>
        OnHostOfItsOwn(new() { ["Ledger:Webhooks:AllowPrivateTargets"] = "false" }, async strict =>
        {
            var api = new Scenarios(strict);
            // As if its name now resolved to a benchmarking address: stored without the subscription check.
            var subscriptionId = "sub_" + Guid.NewGuid().ToString("N");
            var store = strict.Host.Services.GetRequiredService<IDocumentStore>();
            await using (var session = store.LightweightSession())
            {
                session.Insert(new WebhookSubscription
                {
                    Id = subscriptionId, Url = "http://198.18.0.1:9/hooks", Kinds = ["run.cancelled"], CreatedAt = api.Now,
                    ProtectedSecret = strict.Host.Services.GetRequiredService<WebhookSecrets>().Protect("a-very-secret-value-0123456789"),
                    FromSequence = await store.Storage.Database.FetchHighestEventSequenceNumber(),
                });
                await session.SaveChangesAsync();
            }
            var runId = await api.Register(new { runId = NewRunId("moved") });
            Assert.Equal(HttpStatusCode.OK, (await api.Send(HttpMethod.Post, $"/api/runs/{runId}/cancel", LedgerHost.AdminKey, new { reason = "test" })).Status);

            var deadline = DateTime.UtcNow.AddSeconds(60);
            while (true)
            {
                var page = await api.Send(HttpMethod.Get, $"/api/subscriptions/{subscriptionId}/deliveries", LedgerHost.AdminKey);
                var attempts = page.Json!["items"]!.AsArray().SelectMany(d => d!["attempts"]!.AsArray()).ToList();
                if (attempts.Count > 0)
                {
                    Assert.Contains("no global unicast address", attempts[0]!["error"]!.GetValue<string>());
                    return;
                }
                Assert.True(DateTime.UtcNow < deadline, $"no attempt within 60 s: {page.Text}");
                await Task.Delay(200);
            }
        });

    [Fact]
    public async Task a_configured_proxy_carries_the_deliveries()
    {
        await using var proxy = RecordingProxy.Start();
        await OnHostOfItsOwn(new()
        {
            ["Ledger:Webhooks:AllowPrivateTargets"] = "false",
            ["Ledger:Webhooks:Proxy"] = proxy.Url,
        }, async proxied =>
        {
            var api = new Scenarios(proxied);
            var created = await api.Send(HttpMethod.Post, "/api/subscriptions", LedgerHost.AdminKey,
                new { url = "http://93.184.215.14/hooks/proxied", kinds = new[] { "run.cancelled" }, secret = "a-very-secret-value-0123456789" });
            Assert.True(created.Status == HttpStatusCode.Created, created.Text);
            var runId = await api.Register(new { runId = NewRunId("proxied") });
            Assert.Equal(HttpStatusCode.OK, (await api.Send(HttpMethod.Post, $"/api/runs/{runId}/cancel", LedgerHost.AdminKey, new { reason = "test" })).Status);

            Assert.Equal("POST http://93.184.215.14/hooks/proxied HTTP/1.1", await proxy.First(TimeSpan.FromSeconds(60)));
        });
    }

    /// <summary>A host (and database) of the test's own, with these settings; the delivering node is its own.</summary>
    private static async Task OnHostOfItsOwn(Dictionary<string, string> settings, Func<LedgerHost, Task> test)
    {
        var host = LedgerHost.With(settings);
        await host.InitializeAsync();
        try
        {
            await test(host);
        }
        finally
        {
            await host.DisposeAsync();
        }
    }

    /// <summary>An HTTP proxy that records the request line of each request and answers 200.</summary>
    private sealed class RecordingProxy : IAsyncDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private readonly TaskCompletionSource<string> _first = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly CancellationTokenSource _stop = new();

        public string Url => $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";

        public static RecordingProxy Start()
        {
            var proxy = new RecordingProxy();
            proxy._listener.Start();
            _ = proxy.Serve();
            return proxy;
        }

        private async Task Serve()
        {
            try
            {
                while (!_stop.IsCancellationRequested)
                {
                    using var client = await _listener.AcceptTcpClientAsync(_stop.Token);
                    var stream = client.GetStream();
                    var head = new StringBuilder();
                    var buffer = new byte[4096];
                    while (!head.ToString().Contains("\r\n\r\n"))
                    {
                        var read = await stream.ReadAsync(buffer, _stop.Token);
                        if (read == 0) break;
                        head.Append(Encoding.ASCII.GetString(buffer, 0, read));
                    }
                    _first.TrySetResult(head.ToString().Split("\r\n")[0]);
                    await stream.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"u8.ToArray(), _stop.Token);
                }
            }
            catch (OperationCanceledException) { }
            catch (ObjectDisposedException) { }
        }

        public async Task<string> First(TimeSpan limit) => await _first.Task.WaitAsync(limit);

        public ValueTask DisposeAsync()
        {
            _stop.Cancel();
            _listener.Stop();
            return ValueTask.CompletedTask;
        }
    }
}
