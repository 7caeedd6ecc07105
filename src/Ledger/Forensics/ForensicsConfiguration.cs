using Marten;

namespace Ledger.Forensics;

public static class ForensicsConfiguration
{
    public static StoreOptions AddForensics(this StoreOptions options)
    {
        options.Schema.For<Rejection>().Index(r => r.RunId).Index(r => r.Reason).Index(r => r.At);
        return options;
    }
}
