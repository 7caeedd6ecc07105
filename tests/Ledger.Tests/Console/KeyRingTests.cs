using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Xml.Linq;
using Alba;
using Ledger.Tests.Fixtures;
using Ledger.Web;
using Ledger.Webhooks;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Marten;
using Microsoft.AspNetCore.DataProtection.KeyManagement;
using Microsoft.AspNetCore.DataProtection.KeyManagement.Internal;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Npgsql;

namespace Ledger.Tests.Console;

/// <summary>
/// The Data Protection key ring at rest: encrypted with the configured certificate; a ring from
/// before is replaced at start (webhook secrets protected again, the old keys deleted, their
/// sessions ended), once; a change of certificate the same way; and outside Development a ring
/// without a certificate is a warning.
/// </summary>
public sealed class KeyRingTests(LedgerHost ledger) : IClassFixture<LedgerHost>, IDisposable
{
    private const string Secret = "subscriber-secret-0123456789";
    private readonly DirectoryInfo _folder = Directory.CreateTempSubdirectory("ledger-keyring-");

    [Fact]
    public async Task an_unencrypted_ring_is_replaced_at_start_once_webhook_secrets_survive_and_old_sessions_end()
    {
        var first = Certificate("first", "pfx-password-1");
        var second = Certificate("second", "pfx-password-2");
        using var own = TestDatabase.Own();
        var database = own.ConnectionString;
        // Before: no certificate. A subscription and a console session, both under an unencrypted key.
        string subscriptionId;
        ConsoleClient console;
        await using (var before = await ledger.InstanceOn(database, new Dictionary<string, string>()))
        {
            subscriptionId = await Subscribe(before);
            console = new ConsoleClient(before);
            Assert.Equal(HttpStatusCode.Redirect, await console.SignIn(LedgerHost.AdminKey));
        }
        var unencrypted = await Keys(database);
        Assert.NotEmpty(unencrypted);
        Assert.All(unencrypted, k => Assert.Contains(k.Descendants(), e => e.Name.LocalName == "masterKey"));
        var protectedBefore = await ProtectedSecret(database, subscriptionId);

        // With a certificate: one new key, encrypted; the old ones gone; the secret protected again and still the same secret.
        var logs = new CapturedLogs();
        await using (var after = await ledger.InstanceOn(database, Settings(first), s => s.AddSingleton<ILoggerProvider>(logs)))
        {
            var encrypted = await Keys(database);
            // The step's new key, and one Data Protection may have made itself when the key it preferred was revoked.
            Assert.InRange(encrypted.Count, 1, 2);
            AssertEncryptedWith(encrypted, first.Certificate);
            Assert.DoesNotContain(encrypted, k => unencrypted.Any(u => u.Attribute("id")!.Value == k.Attribute("id")!.Value));
            var protectedAfter = await ProtectedSecret(database, subscriptionId);
            Assert.NotEqual(protectedBefore, protectedAfter);
            Assert.Equal(Secret, after.Services.GetRequiredService<WebhookSecrets>().Unprotect(protectedAfter));
            Assert.Contains(logs.Lines, l => l.Level == LogLevel.Warning && l.Text.Contains("now encrypted with the certificate") && l.Text.Contains("1 webhook secrets"));

            // The console session from before ended with its key; a new one works, under the new key.
            var old = new ConsoleClient(after);
            old.Use(console);
            Assert.Equal(HttpStatusCode.Redirect, (await old.Send(HttpMethod.Get, "/runs")).Status);
            Assert.Equal(HttpStatusCode.Redirect, await new ConsoleClient(after).SignIn(LedgerHost.ReadKey));
            AssertEncryptedWith(await Keys(database), first.Certificate);
        }

        // Started again with the same certificate: nothing to do.
        var keysThen = (await Keys(database)).Select(k => k.Attribute("id")!.Value).Order().ToList();
        var secretThen = await ProtectedSecret(database, subscriptionId);
        logs = new CapturedLogs();
        await using (var again = await ledger.InstanceOn(database, Settings(first), s => s.AddSingleton<ILoggerProvider>(logs)))
        {
            Assert.Equal(keysThen, (await Keys(database)).Select(k => k.Attribute("id")!.Value).Order().ToList());
            Assert.Equal(secretThen, await ProtectedSecret(database, subscriptionId));
            Assert.DoesNotContain(logs.Lines, l => l.Text.Contains("now encrypted with the certificate"));
        }

        // A change of certificate, the old one given as previous: everything moves under the new one.
        logs = new CapturedLogs();
        await using (var changed = await ledger.InstanceOn(database, Settings(second, previous: first), s => s.AddSingleton<ILoggerProvider>(logs)))
        {
            var errors = logs.Lines.Where(l => l.Category == typeof(KeyRingMigration).FullName && l.Level is LogLevel.Error or LogLevel.Critical)
                .Select(l => l.Text).ToList();
            Assert.True(errors.Count == 0, string.Join(Environment.NewLine, errors));
            AssertEncryptedWith(await Keys(database), second.Certificate);
            Assert.Equal(Secret, changed.Services.GetRequiredService<WebhookSecrets>().Unprotect(await ProtectedSecret(database, subscriptionId)));
        }
    }

    [Fact]
    public async Task a_secret_that_cannot_be_read_keeps_every_old_key()
    {
        var first = Certificate("kept-first", "pw-1");
        var second = Certificate("kept-second", "pw-2");
        using var own = TestDatabase.Own();
        var database = own.ConnectionString;
        string subscriptionId;
        await using (var withFirst = await ledger.InstanceOn(database, Settings(first))) subscriptionId = await Subscribe(withFirst);
        var keysBefore = (await Keys(database)).Select(k => k.Attribute("id")!.Value).Order().ToList();

        // The second certificate without the first as previous: the secret's key cannot be read, so nothing is deleted.
        var logs = new CapturedLogs();
        await using (await ledger.InstanceOn(database, Settings(second), s => s.AddSingleton<ILoggerProvider>(logs)))
        {
            var after = (await Keys(database)).Select(k => k.Attribute("id")!.Value).ToList();
            Assert.All(keysBefore, id => Assert.Contains(id, after));
            Assert.Contains(logs.Lines, l => l.Level == LogLevel.Error && l.Text.Contains(subscriptionId) && l.Text.Contains("PreviousCertificatePath"));
        }
        // Given the first as previous, the move completes.
        await using (var fixedUp = await ledger.InstanceOn(database, Settings(second, previous: first)))
        {
            AssertEncryptedWith(await Keys(database), second.Certificate);
            Assert.Equal(Secret, fixedUp.Services.GetRequiredService<WebhookSecrets>().Unprotect(await ProtectedSecret(database, subscriptionId)));
        }
    }

    [Fact]
    public async Task a_subscription_another_node_changes_while_its_secret_is_protected_again_keeps_both_changes()
    {
        var certificate = Certificate("racing", "pw-race");
        using var own = TestDatabase.Own();
        var database = own.ConnectionString;
        string subscriptionId;
        await using (var before = await ledger.InstanceOn(database, new Dictionary<string, string>())) subscriptionId = await Subscribe(before);

        // Another node pauses the subscription between the step's read and its write.
        var otherNode = new PauseOnce(database);
        await using (var after = await ledger.InstanceOn(database, Settings(certificate), s => s.ConfigureMarten(o => o.Listeners.Add(otherNode))))
        {
            Assert.Equal(subscriptionId, otherNode.Paused);
            AssertEncryptedWith(await Keys(database), certificate.Certificate);
            await using var session = after.Services.GetRequiredService<IDocumentStore>().QuerySession();
            var stored = await session.LoadAsync<WebhookSubscription>(subscriptionId);
            Assert.Equal(SubscriptionStates.Paused, stored!.State);
            Assert.Equal(Secret, after.Services.GetRequiredService<WebhookSecrets>().Unprotect(stored.ProtectedSecret));
        }
    }

    [Fact]
    public async Task the_ring_moves_under_the_certificate_whichever_key_data_protection_prefers()
    {
        // Which key Data Protection prefers has changed between versions (since .NET 9: keys older than
        // two days first, the latest activated; younger ones the earliest activated). With the old key
        // preferred, a step that only added a key waited in vain for it to be used. Here the earliest is
        // preferred: the step revokes it, and Data Protection, finding its preferred key revoked, makes
        // a key of its own, encrypted with the certificate, which the step accepts.
        var certificate = Certificate("oldest-first", "pw-oldest");
        using var own = TestDatabase.Own();
        var database = own.ConnectionString;
        string subscriptionId;
        await using (var before = await ledger.InstanceOn(database, new Dictionary<string, string>())) subscriptionId = await Subscribe(before);
        var unencrypted = (await Keys(database)).Select(k => k.Attribute("id")!.Value).ToList();

        var logs = new CapturedLogs();
        await using (var after = await ledger.InstanceOn(database, Settings(certificate), s =>
                     {
                         s.RemoveAll<IDefaultKeyResolver>();
                         s.AddSingleton<IDefaultKeyResolver, EarliestKeyFirst>();
                         s.AddSingleton<ILoggerProvider>(logs);
                     }))
        {
            var errors = logs.Lines.Where(l => l.Category == typeof(KeyRingMigration).FullName && l.Level >= LogLevel.Error).Select(l => l.Text).ToList();
            Assert.True(errors.Count == 0, string.Join(Environment.NewLine, errors));
            var keys = await Keys(database);
            AssertEncryptedWith(keys, certificate.Certificate);
            Assert.DoesNotContain(keys, k => unencrypted.Contains(k.Attribute("id")!.Value));
            Assert.Equal(Secret, after.Services.GetRequiredService<WebhookSecrets>().Unprotect(await ProtectedSecret(database, subscriptionId)));
        }
    }

    [Fact]
    public void a_stored_secret_is_read_under_a_revoked_key_and_a_value_that_is_no_secret_is_a_cryptographic_error()
    {
        var secrets = ledger.Host.Services.GetRequiredService<WebhookSecrets>();
        var stored = secrets.Protect("a-secret-under-a-key-about-to-be-revoked");
        // Every key revoked, as the key ring step revokes the old ones before it protects secrets again.
        var keys = ledger.Host.Services.GetRequiredService<IKeyManager>();
        foreach (var key in keys.GetAllKeys()) keys.RevokeKey(key.KeyId, "test");
        Assert.Equal("a-secret-under-a-key-about-to-be-revoked", secrets.Unprotect(stored));
        Assert.Throws<CryptographicException>(() => secrets.Unprotect("not base64url !"));
        Assert.Throws<CryptographicException>(() => secrets.Unprotect(stored[..^4] + "AAAA"));
    }

    /// <summary>Prefers the key activated earliest, as Data Protection does among keys too new to have reached every node; never a revoked or expired one.</summary>
    private sealed class EarliestKeyFirst : IDefaultKeyResolver
    {
        public DefaultKeyResolution ResolveDefaultKeyPolicy(DateTimeOffset now, IEnumerable<IKey> allKeys)
        {
            var keys = allKeys.ToList();
            var preferred = keys.Where(k => k.ActivationDate <= now + TimeSpan.FromMinutes(5)).OrderBy(k => k.ActivationDate).FirstOrDefault();
            if (preferred is { IsRevoked: false } && preferred.ExpirationDate > now) return new DefaultKeyResolution { DefaultKey = preferred };
            return new DefaultKeyResolution
            {
                ShouldGenerateNewKey = true,
                FallbackKey = keys.Where(k => !k.IsRevoked).OrderByDescending(k => k.CreationDate).FirstOrDefault(),
            };
        }
    }

    /// <summary>The first time a session is about to write a subscription, another connection pauses it (as another node would).</summary>
    private sealed class PauseOnce(string database) : DocumentSessionListenerBase
    {
        public string? Paused { get; private set; }

        public override async Task BeforeSaveChangesAsync(IDocumentSession session, CancellationToken token)
        {
            if (Paused is not null || session.PendingChanges.AllChangedFor<WebhookSubscription>().FirstOrDefault() is not { } subscription) return;
            Paused = subscription.Id;
            await using var connection = new NpgsqlConnection(database);
            await connection.OpenAsync(token);
            await using var pause = new NpgsqlCommand(
                "update ledger.mt_doc_webhooksubscription set data = jsonb_set(data, '{state}', to_jsonb(@state)), mt_version = gen_random_uuid() where id = @id", connection);
            pause.Parameters.AddWithValue("state", SubscriptionStates.Paused);
            pause.Parameters.AddWithValue("id", subscription.Id);
            Assert.Equal(1, await pause.ExecuteNonQueryAsync(token));
        }
    }

    [Fact]
    public async Task outside_development_a_ring_without_a_certificate_is_a_warning()
    {
        var logs = new CapturedLogs();
        await using var production = await ledger.SecondInstance(new Dictionary<string, string>
        {
            ["environment"] = "Production",
            ["Ledger:AdminKey"] = "production-admin-key-0001",
            ["Ledger:WorkerKeys:0"] = "production-worker-key-01",
            ["Ledger:ReadKeys:0"] = "production-read-key-0001",
        }, s => s.AddSingleton<ILoggerProvider>(logs));
        Assert.Equal("Production", production.Services.GetRequiredService<Microsoft.Extensions.Hosting.IHostEnvironment>().EnvironmentName);
        Assert.Contains(logs.Lines, l => l.Level == LogLevel.Warning && l.Text.Contains("stored unencrypted") && l.Text.Contains("Ledger:DataProtection:CertificatePath"));
    }

    [Fact]
    public void a_certificate_that_cannot_be_used_is_refused_in_plain_words()
    {
        var missing = Path.Combine(_folder.FullName, "missing.pfx");
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Ledger:DataProtection:CertificatePath"] = missing, ["Ledger:DataProtection:CertificatePassword"] = "never-shown",
        }).Build();
        var error = Assert.Throws<Ledger.Infrastructure.StartupFailureException>(() => KeyRingProtection.LoadCertificates(configuration));
        Assert.Equal(2, error.ExitCode);
        Assert.Contains("Ledger:DataProtection:CertificatePath", error.Message);
        Assert.DoesNotContain("never-shown", error.Message);

        var wrongPassword = Certificate("wrong", "right-password");
        configuration["Ledger:DataProtection:CertificatePath"] = wrongPassword.Path;
        configuration["Ledger:DataProtection:CertificatePassword"] = "wrong-password";
        Assert.Throws<Ledger.Infrastructure.StartupFailureException>(() => KeyRingProtection.LoadCertificates(configuration));
    }

    private sealed record TestCertificate(string Path, string Password, X509Certificate2 Certificate);

    /// <summary>A self-signed RSA certificate with its key, as a PKCS#12 file of the test's own.</summary>
    private TestCertificate Certificate(string name, string password)
    {
        using var rsa = RSA.Create(2048);
        var request = new CertificateRequest($"CN=run-ledger-test-{name}", rsa, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(1));
        var path = System.IO.Path.Combine(_folder.FullName, $"{name}.pfx");
        File.WriteAllBytes(path, certificate.Export(X509ContentType.Pfx, password));
        return new TestCertificate(path, password, certificate);
    }

    private static Dictionary<string, string> Settings(TestCertificate certificate, TestCertificate? previous = null)
    {
        var settings = new Dictionary<string, string>
        {
            ["Ledger:DataProtection:CertificatePath"] = certificate.Path,
            ["Ledger:DataProtection:CertificatePassword"] = certificate.Password,
        };
        if (previous is not null)
        {
            settings["Ledger:DataProtection:PreviousCertificatePath"] = previous.Path;
            settings["Ledger:DataProtection:PreviousCertificatePassword"] = previous.Password;
        }
        return settings;
    }

    private static void AssertEncryptedWith(IReadOnlyList<XElement> keys, X509Certificate2 certificate)
    {
        Assert.NotEmpty(keys);
        foreach (var key in keys)
        {
            Assert.True(KeyRingProtection.EncryptedWith(key, certificate), key.ToString());
            // No key material as it is: the master key element is replaced by the encrypted secret.
            Assert.DoesNotContain(key.Descendants(), e => e.Name.LocalName == "masterKey");
        }
    }

    private static async Task<string> Subscribe(IAlbaHost host)
    {
        using var http = host.Server.CreateClient();
        http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", LedgerHost.AdminKey);
        var response = await http.PostAsync("/api/subscriptions", System.Net.Http.Json.JsonContent.Create(new
        {
            url = "http://127.0.0.1:9/hooks", kinds = new[] { "run.cancelled" }, secret = Secret,
        }));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, text);
        return System.Text.Json.Nodes.JsonNode.Parse(text)!["subscriptionId"]!.GetValue<string>();
    }

    /// <summary>The key elements of the ring as stored (revocations and other elements left out).</summary>
    private static async Task<IReadOnlyList<XElement>> Keys(string database)
    {
        await using var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("select data->>'xml' from ledger.mt_doc_dataprotectionkey", connection);
        var keys = new List<XElement>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync()) keys.Add(XElement.Parse(reader.GetString(0)));
        return keys.Where(x => x.Name.LocalName == "key").ToList();
    }

    private static async Task<string> ProtectedSecret(string database, string subscriptionId)
    {
        await using var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("select data->>'protectedSecret' from ledger.mt_doc_webhooksubscription where id = @id", connection);
        command.Parameters.AddWithValue("id", subscriptionId);
        return (string)(await command.ExecuteScalarAsync())!;
    }

    public void Dispose() => _folder.Delete(recursive: true);
}
