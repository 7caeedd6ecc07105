using System.Reflection;
using Ledger.Contract;
using Ledger.Infrastructure;
using Ledger.Runs;
using Ledger.Tests.Fixtures;

namespace Ledger.Tests.Runs;

/// <summary>
/// Each run endpoint declares, in its <see cref="RefusesAttribute"/>, the refusals its command can get
/// (the API description and the clients are built from that list); the decider is what actually
/// refuses. These tests drive the decider through many seeded random histories and compare the
/// codes each command was refused with against its endpoint's list, both ways: a refusal the
/// decider gains or loses, or a code an attribute gains or loses, fails here.
/// </summary>
public sealed class DeciderRefusalTests
{
    private const string RunId = "run-r";
    private static readonly DateTimeOffset T0 = new(2025, 6, 1, 8, 0, 0, TimeSpan.Zero);
    /// <summary>A short grace and a small cap, so that histories reach past both.</summary>
    private static readonly LateEventPolicy Late = new() { Grace = TimeSpan.FromMinutes(5), MaxPerRun = 3 };

    /// <summary>The endpoint (its operation name) that submits each command; the janitor's has none.</summary>
    internal static readonly Dictionary<Type, string> EndpointOf = new()
    {
        [typeof(RecordEventsCommand)] = "RecordEvents",
        [typeof(ClaimCommand)] = "ClaimRun",
        [typeof(CancelCommand)] = "CancelRun",
        [typeof(ReclassifyCommand)] = "ReclassifyRun",
        [typeof(ObserveCommand)] = "RecordObservation",
    };

    [Fact]
    public void each_run_endpoint_declares_exactly_what_its_decider_refuses()
    {
        var refused = Explore(seed: 23, histories: 3000);

        var wrong = new List<string>();
        foreach (var (command, endpoint) in EndpointOf)
        {
            var declared = Declared(endpoint);
            var seen = refused.GetValueOrDefault(command) ?? [];
            foreach (var code in seen.Except(declared).Order()) wrong.Add($"{endpoint}: the decider refuses {command.Name} with '{code}', which [Refuses] does not list");
            foreach (var code in declared.Except(seen).Order()) wrong.Add($"{endpoint}: [Refuses] lists '{code}', which the decider never gave {command.Name}");
        }
        Assert.True(wrong.Count == 0, string.Join("\n", wrong));
        // The janitor's command is not answered to anyone: it never refuses, it decides there is nothing to do.
        Assert.Empty(refused.GetValueOrDefault(typeof(ExpireLeaseCommand)) ?? []);
    }

    [Fact]
    public void every_decided_command_has_an_endpoint_that_declares_its_refusals()
    {
        var commands = typeof(RunCommand).Assembly.GetTypes().Where(t => t.IsSubclassOf(typeof(RunCommand)) && !t.IsAbstract);
        Assert.Equal(commands.Except([typeof(ExpireLeaseCommand)]).OrderBy(t => t.Name), EndpointOf.Keys.OrderBy(t => t.Name));
        Assert.All(EndpointOf.Values, endpoint => Assert.True(Method(endpoint).GetCustomAttribute<RefusesAttribute>()?.Contended == true,
            $"{endpoint} decides through the run writer, so it can be contended"));
    }

    /// <summary>The codes the endpoint's [Refuses] lists.</summary>
    private static HashSet<string> Declared(string endpoint) =>
        (Method(endpoint).GetCustomAttribute<RefusesAttribute>()?.Codes ?? []).ToHashSet(StringComparer.Ordinal);

    /// <summary>The endpoint method of the operation (Wolverine's route attribute names it).</summary>
    private static MethodInfo Method(string operation) =>
        typeof(RunDecider).Assembly.GetTypes()
            .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.Static | BindingFlags.Instance | BindingFlags.DeclaredOnly))
            .Single(m => m.GetCustomAttributes().Any(a => a.GetType().Namespace == "Wolverine.Http"
                                                          && Equals(a.GetType().GetProperty("Name")?.GetValue(a), operation)));

    /// <summary>The refusal a decision answers with, if any: the one place these tests read a decision's answer.</summary>
    private static string? RefusalCode(Decision decision) => decision.Refusal?.Code;

    /// <summary>Every code each command type was refused with, over seeded random histories of one run.</summary>
    private static Dictionary<Type, HashSet<string>> Explore(int seed, int histories)
    {
        var refused = new Dictionary<Type, HashSet<string>>();
        var random = new Random(seed);
        for (var h = 0; h < histories; h++)
        {
            var history = new History(random);
            var steps = random.Next(1, 16);
            for (var i = 0; i < steps; i++)
            {
                var command = history.NextCommand();
                var decision = history.Decide(command);
                if (RefusalCode(decision) is { } code)
                {
                    if (!refused.TryGetValue(command.GetType(), out var codes)) refused[command.GetType()] = codes = new HashSet<string>(StringComparer.Ordinal);
                    codes.Add(code);
                }
            }
        }
        return refused;
    }

    /// <summary>One run (or none), the tokens its claims handed out, and a clock that moves on.</summary>
    private sealed class History
    {
        private readonly Random _random;
        private readonly DecidedStream _stream;
        private readonly List<string> _tokens = [];
        private DateTimeOffset _now = T0;
        private int _ids;

        public History(Random random)
        {
            _random = random;
            Run? run = null;
            if (random.Next(10) > 0)
            {
                string[] scores = random.Next(2) == 0 ? [] : ["acc"];
                string[] outputs = random.Next(2) == 0 ? [] : ["pred"];
                run = Run.Create(TestEvents.Registered(RunId, T0, scores: scores, outputs: outputs,
                    expectedItems: random.Next(2) == 0 ? null : 2, participant: "team"));
                run.Version = 1;
            }
            _stream = new DecidedStream(run);
        }

        public Decision Decide(RunCommand command)
        {
            var decision = _stream.Decide(command, _now);
            if (command is ClaimCommand claim && RefusalCode(decision) is null && !_tokens.Contains(claim.FreshToken)) _tokens.Add(claim.FreshToken);
            // Time moves on: mostly seconds, sometimes past a lease (60 s) or past the late events' grace.
            _now += _random.Next(10) switch
            {
                < 7 => TimeSpan.FromSeconds(_random.Next(1, 20)),
                < 9 => TimeSpan.FromSeconds(_random.Next(50, 120)),
                _ => Late.Grace + TimeSpan.FromSeconds(_random.Next(1, 60)),
            };
            return decision;
        }

        public RunCommand NextCommand() => _random.Next(20) switch
        {
            < 11 => Events(),
            < 14 => new ClaimCommand(RunId, Pick("w1", "w2"), Pick(null, "claim-1"), $"lt_token-{_ids++}", $"nonce-{_ids++}", DeciderKit.Derivation),
            14 => new CancelCommand(RunId, Pick(null, "stop")),
            < 17 => new ReclassifyCommand(RunId, Pick(RunStatusSets.Terminal.ToArray()), "review", ["evidence"], "ops"),
            17 => new ObserveCommand(RunId, "portal", Pick(Enum.GetValues<RunStatus>()), _now, null),
            _ => new ExpireLeaseCommand(RunId, TimeSpan.FromSeconds(Pick(0, 30))),
        };

        private RecordEventsCommand Events()
        {
            // Mostly the latest lease's token, sometimes an earlier one, or one this run never handed out.
            var token = _tokens.Count > 0 && _random.Next(5) > 0 ? _tokens[^1]
                : _tokens.Count > 0 && _random.Next(2) == 0 ? Pick(_tokens.ToArray())
                : "lt_never-issued";
            var events = Enumerable.Range(0, _random.Next(1, 4)).Select(_ => Event()).ToArray();
            return new RecordEventsCommand(RunId, Access.DigestHex(token), events) { Late = Late };
        }

        private WorkerEvent Event()
        {
            // A repeated eventId now and then: a duplicate, never a refusal.
            var id = _ids > 0 && _random.Next(8) == 0 ? $"e{_random.Next(_ids)}" : $"e{_ids++}";
            var s = new Stamp(id, _now);
            return _random.Next(10) switch
            {
                0 => TestEvents.Started(s),
                1 => TestEvents.Heartbeat(s),
                2 => TestEvents.StepStarted(s, Pick("s1", "s2")),
                3 => TestEvents.StepCompleted(s, Pick("s1", "s2", "s3")),
                4 => TestEvents.Scores(s, (Pick("acc", "other"), Pick(0.5, 0.6))),
                5 => TestEvents.Output(s, Pick("pred", "extra"), Pick("s3://b/1", "s3://b/2")),
                6 => TestEvents.Items(s, Pick("c1", "c2"), Pick(1, 2)),
                7 => TestEvents.Log(s, "line"),
                8 => TestEvents.Completed(s, Pick<long?>(null, 2)),
                _ => TestEvents.Failed(s, ErrorClasses.Unknown),
            };
        }

        private T Pick<T>(params T[] choices) => choices[_random.Next(choices.Length)];
    }
}
