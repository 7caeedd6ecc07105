using System.Security.Cryptography;
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
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
    private readonly IPersistedDataProtector _protector = (IPersistedDataProtector)provider.CreateProtector("Ledger.Webhooks.SubscriptionSecret.v1");

    public string Protect(string secret) => _protector.Protect(secret);

    /// <summary>
    /// The secret, also under a key that is revoked but not yet deleted: only the key ring step
    /// revokes keys (<see cref="Ledger.Web.KeyRingMigration"/>), and it protects every secret again
    /// before it deletes them, so a delivery in between still signs. Revocation decides which key
    /// protects new data; a stored secret is data, not a session. Throws a CryptographicException
    /// when the key is gone or cannot be read, or the stored value is not a protected secret.
    /// </summary>
    public string Unprotect(string protectedSecret)
    {
        try
        {
            return StrictUtf8.GetString(_protector.DangerousUnprotect(WebEncoders.Base64UrlDecode(protectedSecret), ignoreRevocationErrors: true, out _, out _));
        }
        catch (Exception e) when (e is not CryptographicException)
        {
            throw new CryptographicException(e.Message, e);
        }
    }
}
