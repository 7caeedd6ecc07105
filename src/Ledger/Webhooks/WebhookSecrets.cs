using System.Text;
using Microsoft.AspNetCore.DataProtection;
using Microsoft.AspNetCore.WebUtilities;

namespace Ledger.Webhooks;

/// <summary>
/// Subscriber secrets, encrypted at rest with the ledger's Data Protection key ring (kept in
/// PostgreSQL, shared by every node): the HMAC needs the secret back, so it is encrypted, not hashed.
/// </summary>
public sealed class WebhookSecrets(IDataProtectionProvider provider)
{
    private readonly IDataProtector _protector = provider.CreateProtector("Ledger.Webhooks.SubscriptionSecret.v1");

    public string Protect(string secret) => _protector.Protect(secret);

    public string Unprotect(string protectedSecret) => _protector.Unprotect(protectedSecret);

    /// <summary>
    /// For the key ring step only (<see cref="Ledger.Web.KeyRingMigration"/>): reads a secret whose
    /// key it has revoked but not yet deleted, to protect it again under the new key. Throws, as
    /// <see cref="Unprotect"/> does, when the key is gone or cannot be read.
    /// </summary>
    public string UnprotectUnderRevokedKey(string protectedSecret)
    {
        if (_protector is not IPersistedDataProtector persisted) return Unprotect(protectedSecret);
        var plain = persisted.DangerousUnprotect(WebEncoders.Base64UrlDecode(protectedSecret), ignoreRevocationErrors: true, out _, out _);
        return new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true).GetString(plain);
    }
}
