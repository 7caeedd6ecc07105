#!/usr/bin/env python3
"""The four seed incidents, replayed against a running ledger.

For each incident, a *naive* worker (plain urllib) does what the original worker did, and a
worker written with the ``run_ledger`` client does the same job. For each, the script prints
what the original system would have shown and what the ledger shows, with the run ids.

    /usr/bin/python3 examples/incidents/replay.py --ledger http://127.0.0.1:5080 \\
        --key dev-admin-key --worker-key dev-worker-key

Seeds 000, 001 and 003 wait for the ledger's janitor to decide a run whose lease ran out
(at most lease + Ledger:Janitor:GraceSeconds + IntervalSeconds: about 50 s with the defaults).
The four replays run at the same time. Exit code 0 when every verdict is the expected one.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python"))

from run_ledger import IncompleteResults, Ledger, Refused, RetryPolicy, RunTerminated  # noqa: E402

TERMINAL = {"succeeded", "failed", "lost", "cancelled"}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# -- the naive worker's HTTP: what hand-written workers do ----------------------------------

def naive(base: str, key: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request; never raises for an HTTP status; no retries, no classification."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else None


def event(type_: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "eventId": new_id("evt"), "occurredAt": fields.pop("occurredAt", None) or now(), **fields}


# -- reporting -------------------------------------------------------------------------------

@dataclass
class Side:
    """One worker's run, as the original system would have shown it and as the ledger shows it."""

    worker: str
    run_ids: list[str]
    original: str
    ledger: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Replay:
    seed: str
    title: str
    naive: Side
    client: Side
    verdict_ok: bool = False
    problems: list[str] = field(default_factory=list)

    def lines(self, base: str) -> list[str]:
        out = [f"== seed {self.seed}: {self.title}"]
        for side in (self.naive, self.client):
            out.append(f"  -- {side.worker}")
            out.append(f"     original system would show: {side.original}")
            for key, value in side.ledger.items():
                out.append(f"     ledger {key}: {value}")
            for note in side.notes:
                out.append(f"     note: {note}")
            for run_id in side.run_ids:
                # The console's page of the run (sign in with a read key): the API's answer needs a bearer key, which a browser does not send.
                out.append(f"     open: {base}/runs/{urllib.parse.quote(run_id, safe='')}")
        out.append(f"  verdict as expected: {'yes' if self.verdict_ok else 'NO: ' + '; '.join(self.problems)}")
        return out


class Context:
    def __init__(self, base: str, admin_key: str, worker_key: str, timeout: float) -> None:
        self.base = base.rstrip("/")
        self.admin_key = admin_key
        self.worker_key = worker_key
        self.timeout = timeout
        retry = RetryPolicy(max_attempts=8, max_elapsed=60)
        self.admin = Ledger(self.base, admin_key, retry=retry)
        self.worker = Ledger(self.base, worker_key, retry=retry)

    def wait_status(self, run_id: str, accept: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            state = self.admin.get_run(run_id)
            if accept(state) or time.monotonic() > deadline:
                return state
            time.sleep(0.5)

    def wait_terminal(self, run_id: str) -> dict[str, Any]:
        return self.wait_status(run_id, lambda s: s["status"] in TERMINAL)

    def on_board(self, board: str, participant: str, wait: bool) -> bool:
        # Leaderboards are an async projection: a verdict shows up within moments.
        deadline = time.monotonic() + (10 if wait else 2)
        while True:
            rows = self.admin.leaderboard(board)["rows"]
            if any(r["participant"] == participant for r in rows):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.3)

    def anomalies(self, state: dict[str, Any]) -> list[str]:
        return sorted({a["kind"] for a in state.get("anomalies", [])})

    def rejections(self, run_id: str) -> list[str]:
        status, page = naive(self.base, self.admin_key, "GET", f"/api/rejections?runId={run_id}")
        items = page.get("items", []) if isinstance(page, dict) else []
        return [i.get("reason", "?") for i in items]


def summary(ctx: Context, state: dict[str, Any]) -> dict[str, Any]:
    items = state["items"]
    declared = items.get("expected") if items.get("expected") is not None else items.get("reportedTotal")
    counts = f"items committed {items['committed']}" + (f" of {declared} declared" if declared is not None else "")
    return {
        "status": f"{state['status']} (reason: {state.get('reason')})",
        "missing": state.get("missing", []),
        "anomalies": ctx.anomalies(state),
        "counts": f"{counts}; scores {state.get('scores', {})}; outputs {sorted(state.get('outputs', {}))}",
    }


# -- seed 000: finished without scores -------------------------------------------------------

def seed_000(ctx: Context) -> Replay:
    board = new_id("incident-000")
    ctx.admin.define_board(board, "score", "max")

    # Naive: sets FINISHED first, then the score upload fails and is never retried.
    naive_team = new_id("naive-team")
    naive_run = ctx.admin.register(board=board, participant=naive_team, required_outputs=["predictions"],
                                   lease_seconds=3)
    _, lease = naive(ctx.base, ctx.worker_key, "POST", f"/api/runs/{naive_run}/claim", {"worker": "compute-worker"})
    token = lease["leaseToken"]
    naive(ctx.base, token, "POST", f"/api/runs/{naive_run}/events", [event("run.started"), event("run.completed")])
    # push_scores() raises (network error): nothing is sent, nothing retries; push_output() never runs.
    naive_state = ctx.wait_terminal(naive_run)

    # Client: the same worker, same order of calls; complete() refuses locally until the results are in.
    client_team = new_id("client-team")
    client_run = ctx.admin.register(board=board, participant=client_team, required_outputs=["predictions"],
                                    lease_seconds=30)
    refused_locally: Optional[list[str]] = None
    with ctx.worker.claim(client_run, worker="compute-worker") as run:
        run.start()
        try:
            run.complete()
        except IncompleteResults as missing:
            refused_locally = missing.missing
        run.report_scores({"score": 0.87})  # retried on 429/503 and dropped connections
        run.record_output("predictions", "s3://submissions/predictions.csv")
        run.complete()
    client_state = ctx.admin.get_run(client_run)

    replay = Replay("000", "finished without scores",
                    Side("naive worker (status before scores, upload failed)", [naive_run],
                         "Finished; the leaderboard silently misses the submission"),
                    Side("run_ledger client", [client_run], "(the incident does not happen)"))
    replay.naive.ledger = summary(ctx, naive_state)
    replay.naive.ledger["on leaderboard"] = ctx.on_board(board, naive_team, wait=False)
    replay.client.ledger = summary(ctx, client_state)
    replay.client.ledger["on leaderboard"] = ctx.on_board(board, client_team, wait=True)
    replay.client.notes.append(f"complete() before the upload raised IncompleteResults locally: {refused_locally}")
    replay.problems = [p for p, ok in [
        ("naive run should fail with incomplete-results", naive_state["status"] == "failed"
         and naive_state.get("reason") == "incomplete-results"),
        ("naive run should carry completed-before-results", "completed-before-results" in ctx.anomalies(naive_state)),
        ("naive run must not be on the board", replay.naive.ledger["on leaderboard"] is False),
        ("client should refuse locally", refused_locally == ["score:score", "output:predictions"]),
        ("client run should succeed and be on the board", client_state["status"] == "succeeded"
         and replay.client.ledger["on leaderboard"] is True),
    ] if not ok]
    replay.verdict_ok = not replay.problems
    return replay


# -- seed 001: lost, then success an hour later ----------------------------------------------

def seed_001(ctx: Context) -> Replay:
    # Naive: step:complete without its step id, retried; heartbeats stop; a backdated completion.
    naive_run = ctx.admin.register(lease_seconds=2)
    _, lease = naive(ctx.base, ctx.worker_key, "POST", f"/api/runs/{naive_run}/claim", {"worker": "ws-worker"})
    token = lease["leaseToken"]
    finished_at = now()
    naive(ctx.base, token, "POST", f"/api/runs/{naive_run}/events", event("step.started", stepId="step-1", name="job"))
    attempts = []
    for _ in range(5):  # the original retried for an hour; the answer never changes
        status, problem = naive(ctx.base, token, "POST", f"/api/runs/{naive_run}/events",
                                event("step.completed", outcome="success"))
        attempts.append(f"{status} {problem.get('code')} retryable={problem.get('retryable')}")
    lost = ctx.wait_terminal(naive_run)
    ghost_status, ghost = naive(ctx.base, token, "POST", f"/api/runs/{naive_run}/events",
                                event("run.completed", occurredAt=finished_at))
    naive_state = ctx.admin.get_run(naive_run)

    # Client: steps always carry their id; the worker stalls, the janitor decides, and the
    # worker learns it at its next heartbeat: the late completion is never sent.
    client_run = ctx.admin.register(lease_seconds=2)
    learned = False
    ghost_raised = ""
    with ctx.worker.claim(client_run, worker="ws-worker") as run:
        with run.step("job"):
            pass
        run.pause_heartbeats()  # the worker hangs
        ctx.wait_terminal(client_run)
        run.resume_heartbeats()  # and comes back
        learned = run.stopped.wait(run.heartbeat_interval + 5)
        try:
            run.complete(force=True)
        except RunTerminated as ended:
            ghost_raised = f"RunTerminated ({ended.code}, run {ended.run_status})"
    client_state = ctx.admin.get_run(client_run)
    client_history = ctx.admin.history(client_run)

    replay = Replay("001", "lost, then success an hour later",
                    Side("naive worker (stepless step:complete retried, backdated run:complete)", [naive_run],
                         "lost, then success 45 minutes later (lost -> success)"),
                    Side("run_ledger client", [client_run], "(the incident does not happen)"))
    replay.naive.ledger = summary(ctx, naive_state)
    replay.naive.ledger["rejections"] = ctx.rejections(naive_run)
    replay.naive.notes.append(f"each stepless step.completed answered: {attempts[0]} (x{len(attempts)})")
    replay.naive.notes.append(f"status when lost: {lost['status']}; the backdated completion answered "
                              f"{ghost_status} {ghost.get('code')} retryable={ghost.get('retryable')}")
    replay.client.ledger = summary(ctx, client_state)
    replay.client.notes.append(f"run.stopped set by the heartbeat: {learned} (that heartbeat is recorded as a "
                               f"late-event); the completion raised {ghost_raised or 'nothing'} and was never sent")
    replay.problems = [p for p, ok in [
        ("stepless step.completed must be 422 not retryable", all(a.startswith("422 invalid-payload retryable=False")
                                                                  for a in attempts)),
        ("naive run must stay lost", naive_state["status"] == "lost"),
        ("the ghost completion must be a late-completion", "late-completion" in ctx.anomalies(naive_state)
         and ghost_status == 409),
        ("client must learn it was lost", learned and client_state["status"] == "lost"),
        ("client must not send the completion", bool(ghost_raised)
         and "run.completed" not in [e["type"] for e in client_history]),
    ] if not ok]
    replay.verdict_ok = not replay.problems
    return replay


# -- seed 002: succeeded here, failed there; region aliases; missing executions ---------------

MODELS = ["mistral-7b", "llama3.2-1b", "qwen2.5-1.5b"]


def seed_002(ctx: Context) -> Replay:
    def fan_out(batch: str, use_client: bool) -> tuple[list[str], dict[str, Any]]:
        ctx.admin.define_batch(batch, matrix={"labels": {"model": MODELS, "region": ["US", "EU"]}})
        run_ids = []
        for model in MODELS:
            for region in ("US", "eu-west"):  # the runner writes 'eu-west'; the portal looks for 'EU'
                if not use_client and model == "qwen2.5-1.5b" and region == "eu-west":
                    continue  # the runner's database write failed: the execution never appears
                run_id = ctx.admin.register(batch=batch, labels={"model": model, "region": region},
                                            required_outputs=["answer"], lease_seconds=30)
                run_ids.append(run_id)
                empty = model == "mistral-7b" and region == "US"  # the model answered with empty text
                if use_client:
                    with ctx.worker.claim(run_id, worker="runner") as run:
                        run.record_output("answer", f"s3://answers/{run_id}.txt", bytes=0 if empty else 512)
                        run.complete()
                else:
                    _, lease = naive(ctx.base, ctx.worker_key, "POST", f"/api/runs/{run_id}/claim", {"worker": "runner"})
                    token = lease["leaseToken"]
                    if empty:  # the router turned an empty answer into a failure
                        naive(ctx.base, token, "POST", f"/api/runs/{run_id}/events",
                              event("run.failed", errorClass="provider", message="Provider returned empty response"))
                    else:
                        naive(ctx.base, token, "POST", f"/api/runs/{run_id}/events", [
                            event("output.recorded", name="answer", uri=f"s3://answers/{run_id}.txt", bytes=512),
                            event("run.completed")])
                # The executor (Modal) reports what it saw: every execution succeeded.
                ctx.admin.observe(run_id, "modal", "succeeded", detail="Succeeded (45.11s)")
        return run_ids, ctx.admin.get_batch(batch)

    naive_runs, naive_batch = fan_out(new_id("job-naive"), use_client=False)
    client_runs, client_batch = fan_out(new_id("job-client"), use_client=True)
    naive_states = {r: ctx.admin.get_run(r) for r in naive_runs}
    client_states = {r: ctx.admin.get_run(r) for r in client_runs}
    mismatched = [r for r, s in naive_states.items() if "status-mismatch" in ctx.anomalies(s)]
    empty_ok = [r for r, s in client_states.items() if "empty-output" in s.get("warnings", [])]

    def batch_summary(view: dict[str, Any]) -> dict[str, Any]:
        return {
            "batch": f"expected {view['expected']}, registered {view['registered']}, complete {view['complete']}",
            "counts by status": view["counts"],
            "missing": [f"{m['expected'].get('labels')} ({m['reason']})" for m in view["missing"]],
        }

    replay = Replay("002", "Succeeded here, Failed there; region aliases; missing executions",
                    Side("naive runner (empty answer -> failed, one EU write lost)", naive_runs,
                         "Portal: mistral-7b Failed while Modal says Succeeded; EU executions missing "
                         "('eu-west' vs 'EU'), no count of what is missing"),
                    Side("run_ledger client", client_runs, "(the incident does not happen)"))
    replay.naive.ledger = batch_summary(naive_batch)
    replay.naive.ledger["status-mismatch (ledger failed, modal succeeded)"] = mismatched
    replay.naive.ledger["EU runs (registered as 'eu-west')"] = sum(
        1 for s in naive_states.values() if s["labels"].get("region") == "EU")
    replay.client.ledger = batch_summary(client_batch)
    replay.client.ledger["succeeded with warning empty-output"] = empty_ok
    replay.problems = [p for p, ok in [
        ("naive batch must list the missing EU execution", len(naive_batch["missing"]) == 1
         and naive_batch["missing"][0]["expected"]["labels"] == {"model": "qwen2.5-1.5b", "region": "EU"}),
        ("naive failed run must be flagged status-mismatch", len(mismatched) == 1),
        ("eu-west must count as EU", replay.naive.ledger["EU runs (registered as 'eu-west')"] == 2),
        ("client batch must be complete, all succeeded", client_batch["complete"] is True
         and client_batch["counts"].get("succeeded") == 6),
        ("the empty answer must be a success with a warning", len(empty_ok) == 1),
    ] if not ok]
    replay.verdict_ok = not replay.problems
    return replay


# -- seed 003: checkpoint says 152,265, data holds 59,812 --------------------------------------

CLAIMED = 152_265
HELD = 59_812


def chunks(total: int, size: int = 10_000) -> list[tuple[str, int]]:
    out, start = [], 0
    while start < total:
        out.append((f"rows-{start:06d}", min(size, total - start)))
        start += size
    return out


def seed_003(ctx: Context) -> Replay:
    # Naive: the restart's no-op branch confirms the .done count without comparing it with the data.
    naive_run = ctx.admin.register(lease_seconds=3)
    _, lease = naive(ctx.base, ctx.worker_key, "POST", f"/api/runs/{naive_run}/claim", {"worker": "extractor"})
    token = lease["leaseToken"]
    naive(ctx.base, token, "POST", f"/api/runs/{naive_run}/events",
          [event("items.committed", chunkId=c, count=n) for c, n in chunks(HELD)]
          + [event("run.completed", itemsTotal=CLAIMED)])
    pending = ctx.admin.get_run(naive_run)
    naive_state = ctx.wait_terminal(naive_run)

    # Client: the extractor declares its total; complete() compares it with what was committed.
    client_run = ctx.admin.register(expected_items=CLAIMED, lease_seconds=30)
    refused: list[str] = []
    with ctx.worker.claim(client_run, worker="extractor") as run:
        for chunk_id, count in chunks(HELD):
            run.commit_items(chunk_id, count)
        try:
            run.complete(items_total=CLAIMED)
        except IncompleteResults as missing:
            refused = missing.missing
            run.fail("infrastructure", f"restart found {run.committed_items} of {CLAIMED} rows; not confirming")
    client_state = ctx.admin.get_run(client_run)

    replay = Replay("003", "checkpoint says 152,265, data holds 59,812",
                    Side("naive extractor (restart confirms the checkpoint)", [naive_run],
                         "status=complete-noop, 152,265 done; the loss of 92,453 rows is silent"),
                    Side("run_ledger client", [client_run], "(the incident does not happen)"))
    replay.naive.ledger = summary(ctx, naive_state)
    replay.naive.notes.append(f"right after the completion: {pending['status']}, missing {pending['missing']}")
    replay.client.ledger = summary(ctx, client_state)
    replay.client.notes.append(f"complete() raised IncompleteResults locally: {refused}")
    replay.problems = [p for p, ok in [
        ("naive run must wait with items missing", pending["status"] == "running"
         and f"items:{CLAIMED - HELD}" in pending["missing"]),
        ("naive run must fail incomplete-results", naive_state["status"] == "failed"
         and naive_state.get("reason") == "incomplete-results"),
        ("naive counts must show the gap", naive_state["items"]["committed"] == HELD),
        ("client must refuse locally", refused == [f"items:{CLAIMED - HELD}"]),
        ("client run must fail, not succeed", client_state["status"] == "failed"),
    ] if not ok]
    replay.verdict_ok = not replay.problems
    return replay


SEEDS: dict[str, Callable[[Context], Replay]] = {"000": seed_000, "001": seed_001, "002": seed_002, "003": seed_003}


def replay_all(base: str, admin_key: str, worker_key: str, seeds: Optional[list[str]] = None,
               timeout: float = 180.0) -> list[Replay]:
    ctx = Context(base, admin_key, worker_key, timeout)
    chosen = seeds or list(SEEDS)
    with ThreadPoolExecutor(max_workers=len(chosen)) as pool:
        futures = [pool.submit(SEEDS[seed], ctx) for seed in chosen]
        return [f.result() for f in futures]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ledger", default="http://127.0.0.1:5080", help="the ledger's base URL")
    parser.add_argument("--key", default="dev-admin-key", help="admin key")
    parser.add_argument("--worker-key", default="dev-worker-key", help="worker key")
    parser.add_argument("--seed", action="append", choices=sorted(SEEDS), help="replay only these seeds")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the janitor's verdicts")
    args = parser.parse_args(argv)
    try:
        replays = replay_all(args.ledger, args.key, args.worker_key, args.seed, args.timeout)
    except (Refused, OSError) as error:
        print(f"replay failed: {error}", file=sys.stderr)
        return 2
    for replay in replays:
        print("\n".join(replay.lines(args.ledger.rstrip("/"))))
        print()
    ok = all(r.verdict_ok for r in replays)
    print(f"{sum(r.verdict_ok for r in replays)} of {len(replays)} incidents replayed with the expected verdicts")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
