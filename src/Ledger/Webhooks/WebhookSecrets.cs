using Microsoft.AspNetCore.DataProtection;

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
}
