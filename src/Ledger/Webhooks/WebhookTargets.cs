using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;

namespace Ledger.Webhooks;

/// <summary>
/// Which subscriber URLs the ledger will post to: http/https, no credentials, and (unless
/// <c>Ledger:Webhooks:AllowPrivateTargets</c>) global unicast addresses only. An allowlist: IPv6
/// must be in 2000::/3 and IPv4 outside every special-purpose range that is not globally
/// reachable (IANA's registries); an IPv4 address inside an IPv6 one (mapped, NAT64, 6to4,
/// Teredo) is judged by the IPv4 address it reaches; the machine's own addresses are refused.
/// Checked when subscribing and again at connect time, against the address really connected to.
/// </summary>
public static class WebhookTargets
{
    /// <summary>IPv4 ranges that are not global unicast (RFC 6890 and IANA's IPv4 special-purpose registry, "globally reachable" false; multicast and reserved).</summary>
    public static readonly IReadOnlyList<IPNetwork> NotGlobalIPv4 =
    [
        .. new[]
        {
            "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
            "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
            "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        }.Select(IPNetwork.Parse),
    ];

    /// <summary>IPv6 global unicast: the only block of IPv6 a delivery may go to.</summary>
    public static readonly IPNetwork GlobalIPv6 = IPNetwork.Parse("2000::/3");

    /// <summary>Inside 2000::/3, what is not globally reachable: IETF protocol assignments (Teredo apart), documentation, the returned 6bone block.</summary>
    public static readonly IReadOnlyList<IPNetwork> NotGlobalIPv6 =
        [.. new[] { "2001::/23", "2001:db8::/32", "3fff::/20", "3ffe::/16" }.Select(IPNetwork.Parse)];

    private static readonly IPNetwork Nat64 = IPNetwork.Parse("64:ff9b::/96");
    private static readonly IPNetwork SixToFour = IPNetwork.Parse("2002::/16");
    private static readonly IPNetwork Teredo = IPNetwork.Parse("2001::/32");

    /// <summary>What is wrong with the URL's form, or null.</summary>
    public static string? FormError(string? url)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri)) return "Must be an absolute URL.";
        if (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps) return "Must be an http or https URL.";
        if (!string.IsNullOrEmpty(uri.UserInfo)) return "Must not carry credentials (user:password@); authenticate deliveries by their signature.";
        if (!string.IsNullOrEmpty(uri.Fragment)) return "Must not have a fragment.";
        return null;
    }

    /// <summary>Null when every address the host resolves to may be posted to; otherwise why not.</summary>
    public static async Task<string?> AddressError(Uri uri, bool allowPrivate, CancellationToken ct)
    {
        if (allowPrivate) return null;
        IPAddress[] addresses;
        try
        {
            addresses = IPAddress.TryParse(uri.IdnHost.Trim('[', ']'), out var literal) ? [literal] : await Dns.GetHostAddressesAsync(uri.IdnHost, ct);
        }
        catch (SocketException)
        {
            return $"The host '{uri.Host}' does not resolve.";
        }
        if (addresses.Length == 0) return $"The host '{uri.Host}' does not resolve.";
        return addresses.FirstOrDefault(a => !IsAllowed(a)) is { } bad
            ? $"Resolves to {bad}, which is not a global unicast address (loopback, private, link-local, shared, reserved, documentation, " +
              "an IPv4 address inside IPv6, or this machine's own); set Ledger:Webhooks:AllowPrivateTargets to allow it."
            : null;
    }

    /// <summary>A global unicast address that is not one of this machine's own.</summary>
    public static bool IsAllowed(IPAddress address) => IsPublic(address) && !IsOwn(address);

    /// <summary>True for a global unicast address (see the class); false for anything else.</summary>
    public static bool IsPublic(IPAddress address)
    {
        switch (address.AddressFamily)
        {
            case AddressFamily.InterNetwork:
                return !NotGlobalIPv4.Any(n => n.Contains(address));
            case AddressFamily.InterNetworkV6:
                var reached = Embedded(address);
                if (reached.Count > 0) return reached.All(IsPublic);
                return GlobalIPv6.Contains(address) && !NotGlobalIPv6.Any(n => n.Contains(address));
            default:
                return false;
        }
    }

    /// <summary>The IPv4 addresses an IPv6 address leads to: mapped (::ffff:0:0/96), NAT64 (64:ff9b::/96), 6to4 (2002::/16), Teredo (server and client); none otherwise.</summary>
    public static IReadOnlyList<IPAddress> Embedded(IPAddress address)
    {
        if (address.AddressFamily != AddressFamily.InterNetworkV6) return [];
        var b = address.GetAddressBytes();
        // (::ffff:0:0/96 is asked of the address itself: IPNetwork.Contains does not match mapped addresses.)
        if (address.IsIPv4MappedToIPv6 || Nat64.Contains(address)) return [new IPAddress(b.AsSpan(12, 4))];
        if (SixToFour.Contains(address)) return [new IPAddress(b.AsSpan(2, 4))];
        if (Teredo.Contains(address))
        {
            var client = b.AsSpan(12, 4).ToArray().Select(x => (byte)~x).ToArray();
            return [new IPAddress(b.AsSpan(4, 4)), new IPAddress(client)];
        }
        return [];
    }

    /// <summary>True when the address (or the IPv4 address inside it) is one of this machine's interfaces' addresses.</summary>
    public static bool IsOwn(IPAddress address)
    {
        var candidates = Embedded(address).Append(address).Select(a => a.IsIPv4MappedToIPv6 ? a.MapToIPv4() : a).ToList();
        try
        {
            return NetworkInterface.GetAllNetworkInterfaces()
                .SelectMany(i => i.GetIPProperties().UnicastAddresses)
                .Any(u => candidates.Any(c => c.Equals(new IPAddress(u.Address.GetAddressBytes()))));
        }
        catch (NetworkInformationException)
        {
            return false;
        }
    }

    /// <summary>
    /// The sender's handler: no redirects, no proxy unless <c>Ledger:Webhooks:Proxy</c> is set (the
    /// system's proxy would hide the real target from the connect-time check). Without a proxy the
    /// address connected to is checked; through a proxy the target is resolved and checked before
    /// each request, and the proxy is trusted with the rest.
    /// </summary>
    public static HttpMessageHandler Handler(WebhookOptions options, bool allowPrivate)
    {
        var proxy = string.IsNullOrWhiteSpace(options.Proxy) ? null : new WebProxy(new Uri(options.Proxy)) { BypassProxyOnLocal = false };
        var sockets = new SocketsHttpHandler
        {
            // A redirect could lead anywhere, private addresses included: a 3xx is a failed attempt.
            AllowAutoRedirect = false,
            PooledConnectionLifetime = TimeSpan.FromMinutes(2),
            ConnectTimeout = TimeSpan.FromSeconds(Math.Max(1, options.TimeoutSeconds)),
            UseProxy = proxy is not null,
            Proxy = proxy,
            // Checked again at connect time, against the address really connected to (DNS can change after subscribing).
            ConnectCallback = allowPrivate || proxy is not null ? null : ConnectGlobalOnly,
        };
        return allowPrivate || proxy is null ? sockets : new CheckedThroughProxy(sockets);
    }

    /// <summary>Connects to the first address of the host that may be posted to, and to no other.</summary>
    public static async ValueTask<Stream> ConnectGlobalOnly(SocketsHttpConnectionContext context, CancellationToken ct) =>
        await ConnectGlobalOnly(context.DnsEndPoint, ct);

    public static async Task<Stream> ConnectGlobalOnly(DnsEndPoint endPoint, CancellationToken ct)
    {
        var addresses = IPAddress.TryParse(endPoint.Host.Trim('[', ']'), out var literal) ? [literal] : await Dns.GetHostAddressesAsync(endPoint.Host, ct);
        var target = addresses.FirstOrDefault(IsAllowed)
            ?? throw new HttpRequestException($"{endPoint.Host} resolves to no global unicast address (Ledger:Webhooks:AllowPrivateTargets is off)");
        var socket = new Socket(target.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(target, endPoint.Port, ct);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Through a proxy the ledger never sees the connection to the target: the target's addresses are checked before each request instead.</summary>
    private sealed class CheckedThroughProxy(HttpMessageHandler inner) : DelegatingHandler(inner)
    {
        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            if (await AddressError(request.RequestUri!, allowPrivate: false, cancellationToken) is { } refused) throw new HttpRequestException(refused);
            return await base.SendAsync(request, cancellationToken);
        }
    }
}
