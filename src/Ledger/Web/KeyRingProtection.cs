using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Xml.Linq;
using Ledger.Infrastructure;
using Ledger.Webhooks;
using Marten;
using Microsoft.AspNetCore.DataProtection;
using Microsoft.AspNetCore.DataProtection.KeyManagement;
using Microsoft.Extensions.Options;
using Npgsql;

namespace Ledger.Web;

/// <summary>
/// <c>Ledger:DataProtection</c>: the certificate the Data Protection key ring is encrypted with at
/// rest. The ring (kept in PostgreSQL) protects webhook secrets, console cookies and form tokens;
/// without a certificate its keys are stored as they are, and a database reader could use them.
/// </summary>
public sealed class KeyRingOptions
{
    public const string Section = "Ledger:DataProtection";

    /// <summary>An RSA certificate with its private key: a PKCS#12 file (.pfx, .p12) or a PEM file holding certificate and key.</summary>
    public string? CertificatePath { get; set; }
    /// <summary>The password of the PKCS#12 file (or of an encrypted PEM key).</summary>
    public string? CertificatePassword { get; set; }
    /// <summary>The certificate used before, while changing to a new one: keys encrypted with it stay readable until the start re-protects everything under the new one.</summary>
    public string? PreviousCertificatePath { get; set; }
    public string? PreviousCertificatePassword { get; set; }
}

/// <summary>The key ring's storage and its encryption at rest, and the start-up step that brings an existing ring under the certificate.</summary>
public static class KeyRingProtection
{
    /// <summary>The configured certificates (current, previous), loaded and checked; a plain refusal (exit 2) when one cannot be used.</summary>
    public static (X509Certificate2? Current, X509Certificate2? Previous) LoadCertificates(IConfiguration configuration)
    {
        var options = configuration.GetSection(KeyRingOptions.Section).Get<KeyRingOptions>() ?? new KeyRingOptions();
        var current = Load(options.CertificatePath, options.CertificatePassword, "Ledger:DataProtection:CertificatePath");
        var previous = Load(options.PreviousCertificatePath, options.PreviousCertificatePassword, "Ledger:DataProtection:PreviousCertificatePath");
        if (previous is not null && current is null)
        {
            throw new StartupFailureException(StartupFailure.Configuration,
                "Ledger:DataProtection:PreviousCertificatePath is set without Ledger:DataProtection:CertificatePath (the certificate to change to).");
        }
        return (current, previous);
    }

    private static X509Certificate2? Load(string? path, string? password, string setting)
    {
        if (string.IsNullOrWhiteSpace(path)) return null;
        X509Certificate2 certificate;
        try
        {
            var pem = path.EndsWith(".pem", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".crt", StringComparison.OrdinalIgnoreCase);
            certificate = pem
                ? string.IsNullOrEmpty(password) ? X509Certificate2.CreateFromPemFile(path) : X509Certificate2.CreateFromEncryptedPemFile(path, password)
                : X509CertificateLoader.LoadPkcs12FromFile(path, password, X509KeyStorageFlags.EphemeralKeySet);
        }
        catch (Exception e) when (e is CryptographicException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            throw new StartupFailureException(StartupFailure.Configuration, $"{setting} ({path}) cannot be read as a certificate with its private key: {e.Message}");
        }
        if (!certificate.HasPrivateKey || certificate.GetRSAPrivateKey() is null)
        {
            throw new StartupFailureException(StartupFailure.Configuration, $"{setting} ({path}) must be an RSA certificate with its private key.");
        }
        return certificate;
    }

    /// <summary>Data Protection with its keys in PostgreSQL, encrypted with the certificate when one is configured.</summary>
    public static IServiceCollection AddLedgerKeyRing(this IServiceCollection services, IConfiguration configuration)
    {
        var (current, previous) = LoadCertificates(configuration);
        // The key ring is refreshed at once when it changes (since .NET 9 it is refreshed in the
        // background): the start-up step's new key protects at once, and the keys it revokes stop at once.
        AppContext.SetSwitch("Microsoft.AspNetCore.DataProtection.KeyManagement.DisableAsyncKeyRingUpdate", true);
        // Cookie and antiforgery keys in PostgreSQL: sessions survive restarts and work on every node.
        var dataProtection = services.AddDataProtection().SetApplicationName("run-ledger");
        if (current is not null) dataProtection.ProtectKeysWithCertificate(current);
        if (previous is not null) dataProtection.UnprotectKeysWithAnyCertificate(previous);
        services.AddSingleton<IConfigureOptions<KeyManagementOptions>>(provider =>
            new ConfigureOptions<KeyManagementOptions>(o => o.XmlRepository = new MartenXmlRepository(provider.GetRequiredService<IDocumentStore>())));
        services.AddSingleton(new KeyRingCertificate(current));
        services.AddHostedService<KeyRingMigration>();
        return services;
    }

    /// <summary>True when the stored key element is encrypted with this certificate (EncryptedXml names it in its KeyInfo).</summary>
    public static bool EncryptedWith(XElement key, X509Certificate2 certificate)
    {
        var raw = Convert.ToBase64String(certificate.RawData);
        return key.Descendants().Any(e => e.Name.LocalName == "encryptedSecret")
               && key.Descendants().Any(e => e.Name.LocalName == "X509Certificate" && string.Concat(e.Value.Where(c => !char.IsWhiteSpace(c))) == raw);
    }

    public static Guid? KeyId(XElement element) =>
        element.Name.LocalName == "key" && Guid.TryParse((string?)element.Attribute("id"), out var id) ? id : null;
}

/// <summary>The certificate keys are encrypted with, or null.</summary>
public sealed record KeyRingCertificate(X509Certificate2? Certificate);

/// <summary>
/// At start: with a certificate configured, every stored key not encrypted with it (a key from
/// before, unencrypted, or one under the previous certificate) is replaced. A new key is made
/// (encrypted) and the old ones revoked; once a key encrypted with the certificate is in use,
/// every webhook secret is protected again under it, and then the old keys are deleted, which ends
/// the console sessions and open forms they protected. Nothing changes while a webhook secret
/// cannot be read (it would be lost). One node at a time (an advisory lock); once done it is a
/// no-op. Without a certificate, outside Development, it warns.
/// </summary>
public sealed class KeyRingMigration(
    IDocumentStore store, KeyRingCertificate certificate, IKeyManager keys, IDataProtectionProvider provider, WebhookSecrets secrets,
    LedgerDatabase database, IHostEnvironment environment, ILogger<KeyRingMigration> logger) : IHostedService
{
    /// <summary>pg_advisory_lock key of this step ("ledger keyring" in ASCII).</summary>
    private const long LockKey = 0x6c65_6467_6b72_696e;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (certificate.Certificate is not { } current)
        {
            if (!environment.IsDevelopment())
            {
                logger.LogWarning("The Data Protection keys, which protect webhook secrets and console sessions, are stored unencrypted in PostgreSQL: " +
                                  "whoever reads the database can use them. Set Ledger:DataProtection:CertificatePath (docs/operations.md, \"Threat model\").");
            }
            return;
        }

        await using var connection = new NpgsqlConnection(database.ConnectionString);
        await connection.OpenAsync(cancellationToken);
        await using (var take = new NpgsqlCommand($"select pg_advisory_lock({LockKey})", connection)) await take.ExecuteNonQueryAsync(cancellationToken);
        try
        {
            await MigrateAsync(current, cancellationToken);
        }
        finally
        {
            await using var release = new NpgsqlCommand($"select pg_advisory_unlock({LockKey})", connection);
            await release.ExecuteNonQueryAsync(CancellationToken.None);
        }
    }

    private async Task MigrateAsync(X509Certificate2 current, CancellationToken ct)
    {
        List<DataProtectionKey> stored;
        await using (var query = store.QuerySession()) stored = (await query.Query<DataProtectionKey>().ToListAsync(ct)).ToList();
        var stale = stored.Select(k => XElement.Parse(k.Xml))
            .Where(x => KeyRingProtection.KeyId(x) is not null && !KeyRingProtection.EncryptedWith(x, current))
            .Select(x => KeyRingProtection.KeyId(x)!.Value)
            .ToHashSet();
        if (stale.Count == 0) return;

        // Every webhook secret must be readable before anything changes: one that is not would be
        // lost with its key. (Secrets are read under revoked keys too: a start that stopped after
        // revoking resumes here.)
        List<WebhookSubscription> subscriptions;
        await using (var query = store.QuerySession()) subscriptions = (await query.Query<WebhookSubscription>().ToListAsync(ct)).ToList();
        var unreadable = subscriptions.Where(s => !Readable(s)).Select(s => s.Id).ToList();
        if (unreadable.Count > 0)
        {
            logger.LogError("The secrets of {Count} webhook subscriptions ({Subscriptions}) cannot be read with the keys at hand, so the {Stale} keys not encrypted " +
                            "with the certificate are kept: configure the certificate they were encrypted with as Ledger:DataProtection:PreviousCertificatePath, " +
                            "or delete those subscriptions and subscribe again", unreadable.Count, string.Join(", ", unreadable.Take(10)), stale.Count);
            return;
        }

        // A new key, encrypted with the certificate as it is written, and the old ones revoked, so that
        // Data Protection can take into use only a key encrypted with the certificate: the new one, or
        // one it makes itself. Which of several new keys it prefers depends on its version (the latest
        // activated, or the one old enough to have reached every node); a revoked key it never takes.
        // Revoking also refreshes this node's cached key ring, where the old keys could still open old
        // cookies (deletion alone does not).
        var now = TimeProvider.System.GetUtcNow();
        var activation = new[] { now }.Concat(keys.GetAllKeys().Where(k => k.ActivationDate <= now).Select(k => k.ActivationDate.AddSeconds(1))).Max();
        var created = keys.CreateNewKey(activationDate: activation, expirationDate: activation.AddDays(90));
        foreach (var id in stale) keys.RevokeKey(id, "replaced by a key encrypted with the configured certificate");
        if (await InUseAsync(created.KeyId, stale, current, ct) is { } notInUse)
        {
            logger.LogError("No Data Protection key encrypted with the certificate is in use ({InUse}; the new one is {KeyId}): the old keys are revoked but kept, " +
                            "webhook secrets are not protected again, and the next start tries again", notInUse, created.KeyId);
            return;
        }

        // Read again: a subscription made since the check is protected again too.
        List<string> ids;
        await using (var query = store.QuerySession()) ids = (await query.Query<WebhookSubscription>().Select(s => s.Id).ToListAsync(ct)).ToList();
        var reprotected = 0;
        foreach (var id in ids)
        {
            // Only the secret changes, under the subscription's optimistic concurrency, as every change of
            // a subscription is written: a state another node writes meanwhile (failing, paused) is read
            // again, not overwritten, and this start does not fail on it.
            try
            {
                if (await SubscriptionHealth.UpdateAsync(store, id, s => Reprotect(s), ct) is not null) reprotected++;
            }
            catch (CryptographicException)
            {
                unreadable.Add(id);
            }
        }
        if (unreadable.Count > 0)
        {
            logger.LogError("The secrets of {Count} webhook subscriptions ({Subscriptions}) could not be protected again, so the {Stale} keys " +
                            "not encrypted with the certificate are revoked but kept; the next start tries again", unreadable.Count, string.Join(", ", unreadable.Take(10)), stale.Count);
            return;
        }
        // The console sessions end with the keys of their cookies, on every node.
        await using (var session = store.LightweightSession())
        {
            session.DeleteWhere<ConsoleSessionRecord>(_ => true);
            await session.SaveChangesAsync(ct);
        }

        // The old keys deleted, with their revocations.
        // (XmlKeyManager has DeleteKeys without declaring IDeletableKeyManager.)
        _ = keys switch
        {
            IDeletableKeyManager deletable => deletable.DeleteKeys(key => stale.Contains(key.KeyId)),
            XmlKeyManager xml => xml.DeleteKeys(key => stale.Contains(key.KeyId)),
            _ => throw new InvalidOperationException($"The key manager {keys.GetType().Name} cannot delete keys"),
        };
        logger.LogWarning("Data Protection keys are now encrypted with the certificate {Thumbprint}: {Stale} keys that were not were deleted and {Secrets} webhook secrets " +
                          "protected again under a key encrypted with it; console sessions and forms opened before must sign in or load again",
            current.Thumbprint, stale.Count, reprotected);
    }

    private bool Readable(WebhookSubscription subscription)
    {
        try
        {
            secrets.Unprotect(subscription.ProtectedSecret);
            return true;
        }
        catch (CryptographicException)
        {
            return false;
        }
    }

    private bool Reprotect(WebhookSubscription subscription)
    {
        subscription.ProtectedSecret = secrets.Protect(secrets.Unprotect(subscription.ProtectedSecret));
        return true;
    }

    /// <summary>How long the step waits for the key ring to take a key encrypted with the certificate into use.</summary>
    private static readonly TimeSpan InUseWithin = TimeSpan.FromSeconds(150);

    /// <summary>
    /// Null once the key protecting new payloads is the new one, or another key encrypted with the
    /// certificate (Data Protection makes one of its own when the key it prefers is revoked); else
    /// what is in use. The cached key ring is refreshed by whichever thread asks first after a change,
    /// and a caller that finds another thread refreshing is answered from the ring before; and after a
    /// refresh that failed, the ring before is kept for two minutes whatever changes. So it is asked
    /// again, for up to <see cref="InUseWithin"/>, before the step gives up.
    /// </summary>
    private async Task<string?> InUseAsync(Guid created, IReadOnlySet<Guid> stale, X509Certificate2 current, CancellationToken ct)
    {
        var protector = provider.CreateProtector("Ledger.KeyRing.Probe");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var told = false;
        string seen;
        while (true)
        {
            try
            {
                // A protected payload starts with a 4-byte magic header and the 16-byte id of its key.
                var probe = protector.Protect([0]);
                var inUse = new Guid(probe.AsSpan(4, 16));
                if (inUse == created) return null;
                if (!stale.Contains(inUse) && await EncryptedWithAsync(inUse, current, ct)) return null;
                seen = stale.Contains(inUse) ? $"key {inUse}, one of those replaced" : $"key {inUse}, not encrypted with the certificate";
            }
            catch (Exception e) when (e is CryptographicException or InvalidOperationException)
            {
                seen = $"no key: {e.Message}";
            }
            if (clock.Elapsed > InUseWithin) return seen;
            if (!told && clock.Elapsed > TimeSpan.FromSeconds(5))
            {
                told = true;
                logger.LogInformation("Waiting for the key ring to take the new Data Protection key {KeyId} into use (up to {Seconds} s; now {InUse})",
                    created, InUseWithin.TotalSeconds, seen);
            }
            await Task.Delay(TimeSpan.FromMilliseconds(250), ct);
        }
    }

    private async Task<bool> EncryptedWithAsync(Guid keyId, X509Certificate2 certificate, CancellationToken ct)
    {
        await using var query = store.QuerySession();
        return (await query.Query<DataProtectionKey>().ToListAsync(ct))
            .Select(k => XElement.Parse(k.Xml))
            .Any(x => KeyRingProtection.KeyId(x) == keyId && KeyRingProtection.EncryptedWith(x, certificate));
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
