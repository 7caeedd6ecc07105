using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace Ledger.Tests.Infrastructure;

/// <summary>
/// Ports for a process that binds them later (a private PostgreSQL, a ledger, a receiver).
/// They come from below the kernel's ephemeral range, so the many outgoing connections of a
/// test run (Npgsql pools, HTTP clients) cannot be holding one when the process binds it: a
/// port of that range that was free when picked was, in CI, taken by such a connection a moment
/// later, and the PostgreSQL started on it could not listen. Each port is handed out once per
/// test run, and only when a bind on it succeeds now.
/// </summary>
public static class TestPorts
{
    private static readonly ConcurrentDictionary<int, bool> HandedOut = new();

    public static int Next()
    {
        var (low, high) = Range();
        for (var attempt = 0; attempt < 500; attempt++)
        {
            var port = Random.Shared.Next(low, high);
            if (HandedOut.TryAdd(port, true) && Bindable(port))
            {
                return port;
            }
        }
        throw new InvalidOperationException($"No free port between {low} and {high} after 500 tries.");
    }

    /// <summary>
    /// Ports outside the ephemeral range: below it (above the well-known and the usual service ports),
    /// else above it; where it covers both, the same ports below as a best effort.
    /// </summary>
    private static (int Low, int High) Range()
    {
        var (ephemeralLow, ephemeralHigh) = (32768, 60999);
        try
        {
            var bounds = File.ReadAllText("/proc/sys/net/ipv4/ip_local_port_range").Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            (ephemeralLow, ephemeralHigh) = (int.Parse(bounds[0]), int.Parse(bounds[1]));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
        }
        if (ephemeralLow > 21000) return (20000, Math.Min(ephemeralLow, 32000));
        if (ephemeralHigh < 64000) return (ephemeralHigh + 1, 65000);
        return (20000, 32000);
    }

    private static bool Bindable(int port)
    {
        try
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            socket.Bind(new IPEndPoint(IPAddress.Loopback, port));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
