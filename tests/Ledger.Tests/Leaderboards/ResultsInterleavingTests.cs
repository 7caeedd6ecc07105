using System.Net;
using Ledger.Tests.Fixtures;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Leaderboards;

/// <summary>
/// Over real HTTP: any interleaving, batching and duplication of scores, outputs, chunks and the
/// completion gives succeeded if and only if everything required arrived and the counts balance.
/// </summary>
public sealed class ResultsInterleavingTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    public async Task succeeded_iff_every_required_result_arrived_and_counts_balance(int seed)
    {
        var random = new Random(seed * 7919);
        for (var round = 0; round < 8; round++)
        {
            var chunks = random.Next(1, 4);
            var perChunk = random.Next(1, 10);
            var (runId, token) = await _api.Started(new
            {
                runId = NewRunId("mix"),
                requiredScores = new[] { "a", "b" },
                requiredOutputs = new[] { "out" },
                expectedItems = chunks * perChunk,
            });

            var pieces = new List<(string Name, object Event)>
            {
                ("score:a", Event("scores.reported", $"sa-{round}", fields: new { scores = new { a = 1.0 } })),
                ("score:b", Event("scores.reported", $"sb-{round}", fields: new { scores = new { b = 2.0 } })),
                ("output", Event("output.recorded", $"o-{round}", fields: new { name = "out", uri = "s3://x/out" })),
                ("completion", Event("run.completed", $"done-{round}")),
            };
            pieces.AddRange(Enumerable.Range(0, chunks).Select(c =>
                ($"chunk:{c}", Event("items.committed", $"c{c}-{round}", fields: new { chunkId = $"c{c}", count = perChunk }))));

            // Drop some pieces, duplicate others, shuffle, and send in random batches.
            var delivered = pieces.Where(_ => random.Next(5) != 0).ToList();
            var stream = delivered.Concat(delivered.Where(_ => random.Next(3) == 0)).OrderBy(_ => random.Next()).ToList();
            for (var i = 0; i < stream.Count;)
            {
                var size = random.Next(1, 4);
                var batch = stream.Skip(i).Take(size).Select(p => p.Event).ToArray();
                var response = await _api.Events(runId, token, batch);
                Assert.True(response.Status == HttpStatusCode.OK, response.Text);
                i += size;
            }

            var complete = delivered.Select(p => p.Name).Distinct().Count() == pieces.Count;
            var run = await _api.Run(runId);
            Assert.Equal(complete ? "succeeded" : "running", run["status"]!.GetValue<string>());
            var committed = delivered.Count(p => p.Name.StartsWith("chunk:")) * perChunk;
            Assert.Equal(committed, run["items"]!["committed"]!.GetValue<long>());

            // Exactly what did not arrive, in the ledger's order: completion, scores, outputs, items.
            bool Arrived(string name) => delivered.Any(p => p.Name == name);
            var missing = new List<string>();
            if (!complete)
            {
                if (!Arrived("completion")) missing.Add("completion");
                if (!Arrived("score:a")) missing.Add("score:a");
                if (!Arrived("score:b")) missing.Add("score:b");
                if (!Arrived("output")) missing.Add("output:out");
                if (committed < chunks * perChunk) missing.Add($"items:{chunks * perChunk - committed}");
            }
            Assert.Equal(missing, run["missing"]!.AsArray().Select(m => m!.GetValue<string>()));
        }
    }
}
