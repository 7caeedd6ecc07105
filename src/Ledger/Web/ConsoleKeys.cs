using System.Xml.Linq;
using Marten;
using Microsoft.AspNetCore.DataProtection.Repositories;

namespace Ledger.Web;

/// <summary>One Data Protection key ring element (XML), stored as a Marten document.</summary>
public sealed class DataProtectionKey
{
    public string Id { get; set; } = "";
    public string Xml { get; set; } = "";
}

/// <summary>
/// The keys that protect webhook secrets, the console's session cookies and antiforgery tokens
/// live in PostgreSQL beside the runs, so a session survives a restart and is honoured by every
/// node. They reach this repository encrypted when <c>Ledger:DataProtection:CertificatePath</c> is
/// set (<see cref="KeyRingProtection"/>); keys can be deleted (<see cref="KeyRingMigration"/>).
/// </summary>
public sealed class MartenXmlRepository(IDocumentStore store) : IDeletableXmlRepository
{
    public IReadOnlyCollection<XElement> GetAllElements()
    {
        using var session = store.QuerySession();
        return session.Query<DataProtectionKey>().ToListAsync().GetAwaiter().GetResult().Select(k => XElement.Parse(k.Xml)).ToList();
    }

    public void StoreElement(XElement element, string friendlyName)
    {
        using var session = store.LightweightSession();
        session.Store(new DataProtectionKey
        {
            Id = string.IsNullOrWhiteSpace(friendlyName) ? Guid.NewGuid().ToString("N") : friendlyName,
            Xml = element.ToString(SaveOptions.DisableFormatting),
        });
        session.SaveChangesAsync().GetAwaiter().GetResult();
    }

    public bool DeleteElements(Action<IReadOnlyCollection<IDeletableElement>> chooseElements)
    {
        using var session = store.LightweightSession();
        var elements = session.Query<DataProtectionKey>().ToListAsync().GetAwaiter().GetResult()
            .Select(k => new Deletable(k.Id, XElement.Parse(k.Xml))).ToList();
        chooseElements(elements);
        foreach (var chosen in elements.Where(e => e.DeletionOrder is not null).OrderBy(e => e.DeletionOrder)) session.Delete<DataProtectionKey>(chosen.Id);
        session.SaveChangesAsync().GetAwaiter().GetResult();
        return true;
    }

    private sealed class Deletable(string id, XElement element) : IDeletableElement
    {
        public string Id { get; } = id;
        public XElement Element { get; } = element;
        public int? DeletionOrder { get; set; }
    }
}
