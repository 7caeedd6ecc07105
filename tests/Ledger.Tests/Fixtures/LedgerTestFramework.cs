using Xunit.Abstractions;
using Xunit.Sdk;

[assembly: TestFramework("Ledger.Tests.Fixtures.LedgerTestFramework", "Ledger.Tests")]

namespace Ledger.Tests.Fixtures;

/// <summary>
/// xunit's own framework, plus one thing at the end of the test run: the private PostgreSQL
/// that this run started (when LEDGER_TEST_CONNECTION is unset) is stopped and cleaned up.
/// </summary>
public sealed class LedgerTestFramework : XunitTestFramework
{
    public LedgerTestFramework(IMessageSink messageSink) : base(messageSink)
    {
        DisposalTracker.Add(new StopServerOnDispose());
    }

    private sealed class StopServerOnDispose : IDisposable
    {
        public void Dispose() => TestDatabase.StopServer();
    }
}
