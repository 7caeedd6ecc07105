using System.Net;
using System.Net.Sockets;

namespace Ledger.Webhooks;

/// <summary>Which subscriber URLs the ledger will post to: http/https, no credentials, and (unless allowed) public addresses only.</summary>
public static class WebhookTargets
{
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
        return addresses.FirstOrDefault(a => !IsPublic(a)) is { } bad
            ? $"Resolves to {bad}, a loopback, private or link-local address; set Ledger:Webhooks:AllowPrivateTargets to allow it."
            : null;
    }

    public static bool IsPublic(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
        if (IPAddress.IsLoopback(address) || address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any)) return false;
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            var b = address.GetAddressBytes();
            return !(b[0] == 0 || b[0] == 10 || b[0] == 127 || b[0] >= 224
                     || (b[0] == 172 && b[1] >= 16 && b[1] < 32)
                     || (b[0] == 192 && b[1] == 168)
                     || (b[0] == 169 && b[1] == 254)
                     || (b[0] == 100 && b[1] >= 64 && b[1] < 128));
        }
        return !(address.IsIPv6LinkLocal || address.IsIPv6SiteLocal || address.IsIPv6UniqueLocal || address.IsIPv6Multicast);
    }
}
