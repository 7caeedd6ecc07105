using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Ledger.Operations;
using Ledger.Tests.Fixtures;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry.Trace;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Operations;

/// <summary>One events request is one trace: the request, its validation, and the writer group that decided and committed it.</summary>
[Collection(MetricsCollection.Name)]
public sealed class TracingTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    [Fact]
    public async Task the_spans_of_one_events_request_share_its_trace_down_to_the_npgsql_commands()
    {
        var spans = new List<Activity>();
        await using var instance = await ledger.SecondInstance(services =>
            services.ConfigureOpenTelemetryTracerProvider(t => t.AddInMemoryExporter(spans)));
        // Registered and claimed through another instance: this one's writer reads the run (it keeps only runs it wrote).
        var (runId, token) = await new Scenarios(ledger).Started(new { runId = NewRunId("traced") });

        // The caller's trace context, as a worker's HTTP client would send it.
        var traceId = ActivityTraceId.CreateRandom();
        using var http = instance.Server.CreateClient();
        using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/runs/{runId}/events")
        {
            Content = new StringContent(JsonSerializer.Serialize(new[] { Event("run.started"), Event("heartbeat") }, Scenarios.Json), Encoding.UTF8, "application/json"),
        };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        request.Headers.Add("traceparent", $"00-{traceId}-{ActivitySpanId.CreateRandom()}-01");
        using var response = await http.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);

        // The group's span ends after the callers are answered: wait for it.
        List<Activity> Ours()
        {
            lock (spans)
            {
                var group = spans.Where(s => s.OperationName == "ledger.writer.group"
                    && (s.TraceId == traceId || s.Links.Any(l => l.Context.TraceId == traceId))).ToList();
                var groupTraces = group.Select(g => g.TraceId).ToHashSet();
                return spans.Where(s => s.TraceId == traceId || groupTraces.Contains(s.TraceId)).ToList();
            }
        }
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!Ours().Any(s => s.OperationName == "ledger.writer.group") || !Ours().Any(s => s.Source.Name == "Microsoft.AspNetCore"))
        {
            Assert.True(DateTime.UtcNow < deadline, "the spans of the request were not exported: " + string.Join(", ", spans.Select(s => s.OperationName)));
            await Task.Delay(50);
        }

        var ours = Ours();
        var describe = string.Join("\n", ours.Select(s => $"{s.Source.Name} {s.OperationName} {s.TraceId} {s.SpanId} parent {s.ParentSpanId}"));
        var server = Assert.Single(ours, s => s.Source.Name == "Microsoft.AspNetCore" && s.TraceId == traceId);
        var validate = Assert.Single(ours, s => s.OperationName == "ledger.events.validate");
        Assert.Equal(server.SpanId, validate.ParentSpanId);
        Assert.Equal(runId, validate.GetTagItem("ledger.run_id"));

        var groupSpan = Assert.Single(ours, s => s.OperationName == "ledger.writer.group");
        // A group serves many requests: it links to each; alone, it is a child of this request's span.
        Assert.Contains(groupSpan.Links, l => l.Context.TraceId == traceId && l.Context.SpanId == server.SpanId);
        Assert.Equal(traceId, groupSpan.TraceId);
        Assert.Equal(server.SpanId, groupSpan.ParentSpanId);
        foreach (var step in new[] { "ledger.writer.read", "ledger.writer.decide", "ledger.writer.commit" })
        {
            var span = Assert.Single(ours, s => s.OperationName == step);
            Assert.True(span.ParentSpanId == groupSpan.SpanId, $"{step} is not under the group\n{describe}");
        }
        var commit = ours.Single(s => s.OperationName == "ledger.writer.commit");
        Assert.True(ours.Any(s => s.Source.Name == "Npgsql" && s.ParentSpanId == commit.SpanId), $"no Npgsql command under the commit\n{describe}");
        Assert.True(ours.Any(s => s.Source.Name == "Npgsql" && s.ParentSpanId == ours.Single(r => r.OperationName == "ledger.writer.read").SpanId),
            $"no Npgsql command under the read\n{describe}");
        Assert.Equal(LedgerTracing.SourceName, groupSpan.Source.Name);
    }
}
