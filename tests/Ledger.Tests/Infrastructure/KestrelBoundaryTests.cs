using System.Net.Sockets;
using System.Text;
using Npgsql;

namespace Ledger.Tests.Infrastructure;

/// <summary>
/// What the HTTP server answers before the ledger sees a request (a NUL in the path, a request
/// line or headers past their limits) cannot be shaped into problem details, but it must stay a
/// 4xx answer, never a dropped connection. Checked against the real service on a real socket.
/// </summary>
public sealed class KestrelBoundaryTests
{
    [Fact]
    public async Task malformed_http_gets_a_4xx_status_line_never_a_dropped_connection()
    {
        var (server, database, name) = Fixtures.TestDatabase.Create();
        try
        {
            var env = new Dictionary<string, string?>
            {
                ["ASPNETCORE_ENVIRONMENT"] = "Production",
                ["Ledger__AdminKey"] = "kestrel-test-admin-key",
                ["ConnectionStrings__Ledger"] = database,
                ["Ledger__Janitor__Enabled"] = "false",
                ["Ledger__DaemonMode"] = "Disabled",
            };
            using var service = LedgerProcess.Start(env, ["--urls", "http://127.0.0.1:0"], Directory.GetCurrentDirectory());
            var address = new Uri(await service.WaitForAddress(TimeSpan.FromSeconds(90)));

            var cases = new (string Name, string Request, int[] Expected)[]
            {
                ("NUL in the path", "GET /api/runs/a%00b HTTP/1.1\r\nHost: x\r\n\r\n", [400]),
                ("a 20 KB request line", $"GET /api/runs?board={new string('a', 20 * 1024)} HTTP/1.1\r\nHost: x\r\n\r\n", [414]),
                ("40 KB of headers", $"GET /api/runs HTTP/1.1\r\nHost: x\r\nX-Big: {new string('a', 40 * 1024)}\r\n\r\n", [431]),
                ("no Host header", "GET /api/runs HTTP/1.1\r\n\r\n", [400]),
                ("NUL in a header", "GET /api/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\u0000b\r\n\r\n", [400]),
                // Kestrel lets this one through; the ledger does not know such a key.
                ("a control character in the bearer token", "GET /api/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\u0001b\r\n\r\n", [401]),
            };
            foreach (var (what, request, expected) in cases)
            {
                var status = await StatusOf(address, request);
                Assert.True(status is not null, $"{what}: the connection was dropped without an answer");
                Assert.True(expected.Contains(status!.Value), $"{what}: answered {status}, expected one of {string.Join(", ", expected)}");
            }

            // What gets past the server is the ledger's, and answers problem details.
            var answer = await RawAnswer(address, "DELETE /api/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer kestrel-test-admin-key\r\nConnection: close\r\n\r\n");
            Assert.StartsWith("HTTP/1.1 405", answer);
            Assert.Contains("Content-Type: application/problem+json", answer);
            Assert.Contains("\"retryable\":false", answer);
            service.Terminate(TimeSpan.FromSeconds(30));
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            Fixtures.TestDatabase.Drop(server, name);
        }
    }

    private static async Task<int?> StatusOf(Uri address, string request)
    {
        var answer = await RawAnswer(address, request);
        return answer.StartsWith("HTTP/1.1 ", StringComparison.Ordinal) && int.TryParse(answer.AsSpan(9, 3), out var code) ? code : null;
    }

    private static async Task<string> RawAnswer(Uri address, string request)
    {
        using var client = new TcpClient();
        await client.ConnectAsync(address.Host, address.Port);
        await using var stream = client.GetStream();
        stream.ReadTimeout = 10_000;
        try
        {
            await stream.WriteAsync(Encoding.Latin1.GetBytes(request));
        }
        catch (IOException)
        {
            // The server may answer and close before the whole request is written; the answer is what counts.
        }
        var buffer = new byte[16 * 1024];
        var text = new StringBuilder();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        try
        {
            int read;
            while ((read = await stream.ReadAsync(buffer, timeout.Token)) > 0)
            {
                text.Append(Encoding.Latin1.GetString(buffer, 0, read));
                if (text.ToString().Contains("\r\n\r\n") && !request.Contains("Connection: close")) break;
            }
        }
        catch (Exception e) when (e is IOException or OperationCanceledException)
        {
        }
        return text.ToString();
    }
}
