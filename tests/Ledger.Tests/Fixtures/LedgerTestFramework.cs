using Xunit.Abstractions;
using Xunit.Sdk;

[assembly: TestFramework("Ledger.Tests.Fixtures.LedgerTestFramework", "Ledger.Tests")]

namespace Ledger.Tests.Fixtures;

/// <summary>
/// xunit's own framework, plus one thing at the start and one at the end of the test run. At the
/// start, a browser assertion waits up to 30 s, not Playwright's 5: the suite runs classes in
/// parallel on machines of two cores, where a page may take longer than 5 s to show. At the end,
/// the private PostgreSQL that this run started (when LEDGER_TEST_CONNECTION is unset) is stopped
/// and cleaned up.
/// </summary>
public sealed class LedgerTestFramework : XunitTestFramework
{
    public LedgerTestFramework(IMessageSink messageSink) : base(messageSink)
    {
        Microsoft.Playwright.Assertions.SetDefaultExpectTimeout(30_000);
        DisposalTracker.Add(new StopServerOnDispose());
    }

    private sealed class StopServerOnDispose : IDisposable
    {
        public void Dispose() => TestDatabase.StopServer();
    }
}
