"""The Python client against a real ledger process."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any, Optional

import pytest

from conftest import PrivatePostgres, Target
from dropping_proxy import DroppingProxy
from run_ledger import IncompleteResults, Ledger, Refused, RetryPolicy, RunTerminated


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Calls:
    """Counts attempts per (method, path) and remembers every status seen."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self.statuses: list[Optional[int]] = []
        self.answered: list[tuple[float, Optional[int]]] = []
        self._lock = threading.Lock()

    def on_request(self, method: str, path: str) -> None:
        with self._lock:
            self.requests[(method, path)] += 1

    def on_response(self, method: str, path: str, status: Optional[int]) -> None:
        with self._lock:
            self.statuses.append(status)
            self.answered.append((time.monotonic(), status))

    def total(self) -> int:
        return sum(self.requests.values())


def counted(target: Target, calls: Calls, key: str = "worker", **options: object) -> Ledger:
    factory = target.worker if key == "worker" else target.admin
    return factory(on_request=calls.on_request, on_response=calls.on_response, **options)


def types(history: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in history]


def test_a_run_driven_to_succeeded(admin: Ledger, worker: Ledger) -> None:
    run_id = admin.register(required_scores=["accuracy"], required_outputs=["predictions"], expected_items=30,
                            lease_seconds=30, participant="team-a")
    with worker.claim(run_id, worker="py-test") as run:
        assert run.required_scores == ("accuracy",)
        assert run.required_outputs == ("predictions",)
        assert run.expected_items == 30
        run.start()
        with run.step("extract") as step_id:
            for chunk in range(3):
                run.commit_items(f"chunk-{chunk}", 10)
            run.log([f"extracted in {step_id}"])
        with run.step("score"):
            run.report_scores({"accuracy": 0.93})
            run.record_output("predictions", "s3://bucket/predictions.csv", sha256="a" * 64, bytes=1234)
        answer = run.complete(items_total=30)
        assert answer["status"] == "succeeded"
        assert run.stopped.is_set()
    assert not run.heartbeat_alive

    state = admin.get_run(run_id)
    assert state["status"] == "succeeded"
    assert state["missing"] == []
    assert state["scores"] == {"accuracy": 0.93}
    assert state["items"]["committed"] == 30
    assert all(step["completed"] and step["outcome"] == "ok" for step in state["steps"])
    # Every later call says the run has ended, without asking the ledger.
    with pytest.raises(RunTerminated):
        run.log(["too late"])


def test_complete_refuses_locally_while_a_required_score_or_output_is_missing(target: Target, admin: Ledger) -> None:
    run_id = admin.register(required_scores=["accuracy", "f1"], required_outputs=["predictions"], lease_seconds=30)
    calls = Calls()
    with counted(target, calls).claim(run_id) as run:
        run.report_scores({"accuracy": 0.5})
        before = calls.total()
        with pytest.raises(IncompleteResults) as missing:
            run.complete()
        assert missing.value.missing == ["score:f1", "output:predictions"]
        assert calls.total() == before, "nothing may be sent"
        assert admin.get_run(run_id)["completionReported"] is False

        # Forced: the ledger records the completion and keeps the run open, listing what is missing.
        forced = run.complete(force=True)
        assert forced["status"] == "running"
        assert not run.stopped.is_set()
        state = admin.get_run(run_id)
        assert state["reason"] == "completed-before-results"
        assert state["missing"] == ["score:f1", "output:predictions"]
        run.report_scores({"f1": 0.4})
        done = run.record_output("predictions", "s3://bucket/p.csv")
        assert done["status"] == "succeeded"


def test_a_refused_payload_raises_at_once_without_a_retry(target: Target, admin: Ledger) -> None:
    run_id = admin.register(required_scores=["accuracy"], lease_seconds=30)
    calls = Calls()
    with counted(target, calls).claim(run_id, heartbeat_interval=60) as run:
        events = ("POST", f"/api/runs/{run_id}/events")

        before = calls.requests[events]
        started = time.monotonic()
        with pytest.raises(Refused) as invalid:
            run.fail("not-an-error-class", "boom")
        assert calls.requests[events] - before == 1
        assert time.monotonic() - started < 2
        assert invalid.value.status == 422
        assert invalid.value.code == "invalid-payload"
        assert invalid.value.type == "urn:run-ledger:problem:invalid-payload"
        assert invalid.value.run_status == "claimed"
        assert "errorClass" in invalid.value.errors
        assert "errorClass: " in str(invalid.value), "the message names the field to fix"
        assert not isinstance(invalid.value, RunTerminated)

        run.report_scores({"accuracy": 0.7})
        before = calls.requests[events]
        with pytest.raises(Refused) as conflict:
            run.report_scores({"accuracy": 0.9})
        assert calls.requests[events] - before == 1
        assert (conflict.value.status, conflict.value.code, conflict.value.run_status) == (409, "score-conflict", "running")
        assert not run.stopped.is_set(), "a refused event does not end the run"
        run.complete()


def test_cancel_sets_stopped_within_one_heartbeat(admin: Ledger, worker: Ledger) -> None:
    run_id = admin.register(lease_seconds=3)
    with worker.claim(run_id) as run:
        run.start()
        interval = run.heartbeat_interval
        assert interval <= 1.0  # a third of the 3 s lease, never more
        admin.cancel(run_id, reason="operator changed their mind")
        cancelled_at = time.monotonic()
        assert run.stopped.wait(interval + 2.0), "the heartbeat did not learn of the cancellation"
        learned_after = time.monotonic() - cancelled_at
        print(f"cancel learned after {learned_after:.2f} s (heartbeat interval {interval:.2f} s)")
        assert learned_after <= interval + 1.0
        with pytest.raises(RunTerminated) as ended:
            run.log(["still working?"])
        assert ended.value.run_status == "cancelled"
        assert ended.value.code == "run-terminal"
    assert not run.heartbeat_alive


def test_janitor_lost_sets_stopped_within_one_heartbeat(admin: Ledger, worker: Ledger) -> None:
    run_id = admin.register(lease_seconds=2)
    with worker.claim(run_id) as run:
        run.start()
        run.pause_heartbeats()  # a stalled worker: the lease runs out, the janitor marks the run lost
        deadline = time.monotonic() + 20
        while admin.get_run(run_id)["status"] != "lost":
            assert time.monotonic() < deadline, "the janitor never marked the run lost"
            time.sleep(0.2)
        assert not run.stopped.is_set()
        run.resume_heartbeats()
        resumed = time.monotonic()
        assert run.stopped.wait(run.heartbeat_interval + 2.0)
        learned_after = time.monotonic() - resumed
        print(f"lost learned {learned_after:.2f} s after heartbeats resumed (interval {run.heartbeat_interval:.2f} s)")
        assert learned_after <= run.heartbeat_interval + 1.0
        assert run.status == "lost"
        with pytest.raises(RunTerminated):
            run.complete(force=True)  # the ghost completion of seed 001 is never sent
    assert not run.heartbeat_alive
    history = admin.history(run_id)
    assert "run.completed" not in types(history)
    assert admin.get_run(run_id)["status"] == "lost"


def test_a_dropped_connection_during_register_and_claim_is_retried_without_a_second_run_or_a_409(
        target: Target) -> None:
    host, port = target.url.removeprefix("http://").split(":")
    dropped_once: set[str] = set()
    lock = threading.Lock()

    def drop(method: str, path: str) -> bool:
        kind = ("register" if path == "/api/runs" else "claim" if path.endswith("/claim")
                else "event" if path.endswith("/events") else None)
        if method != "POST" or kind is None:
            return False
        with lock:
            if kind in dropped_once:
                return False
            dropped_once.add(kind)
            return True

    proxy = DroppingProxy(host, int(port), drop)
    try:
        retry = RetryPolicy(max_attempts=5, max_elapsed=20, initial_delay=0.1)
        admin = Ledger(proxy.url, target.admin_key, retry=retry)
        worker = Ledger(proxy.url, target.worker_key, retry=retry)
        participant = unique("dropped")

        run_id = admin.register(required_scores=["accuracy"], participant=participant, lease_seconds=30)
        assert ("POST", "/api/runs") in proxy.dropped
        assert [r["runId"] for r in admin.list_runs(participant=participant)] == [run_id]

        with worker.claim(run_id, worker="flaky-network", heartbeat_interval=60) as run:
            assert ("POST", f"/api/runs/{run_id}/claim") in proxy.dropped
            # The first event's answer is lost too: the retry carries the same eventId.
            answer = run.report_scores({"accuracy": 0.8})
            assert ("POST", f"/api/runs/{run_id}/events") in proxy.dropped
            assert answer["results"][0]["result"] == "duplicate"
            assert run.complete()["status"] == "succeeded"

        history = admin.history(run_id)
        assert types(history).count("run.registered") == 1
        assert types(history).count("run.claimed") == 1
        assert types(history).count("scores.reported") == 1
    finally:
        proxy.close()


def test_a_503_while_the_database_restarts_is_retried_and_the_event_recorded_once(
        private_ledger: tuple[PrivatePostgres, Target]) -> None:
    cluster, target = private_ledger
    calls = Calls()
    patient = RetryPolicy(max_attempts=60, max_elapsed=90, initial_delay=0.2, max_delay=2)
    admin = target.admin(retry=patient)
    worker = counted(target, calls, retry=patient)
    run_id = admin.register(expected_items=10, lease_seconds=60)
    with worker.claim(run_id, heartbeat_interval=30) as run:
        run.commit_items("chunk-1", 5)

        cluster.stop()
        outcome: dict[str, object] = {}

        def commit() -> None:
            try:
                outcome["answer"] = run.commit_items("chunk-2", 5)
            except Exception as error:  # noqa: BLE001 - reported below
                outcome["error"] = error

        committing = threading.Thread(target=commit)
        committing.start()
        time.sleep(3)
        assert committing.is_alive(), f"the call did not wait for the database: {outcome}"
        cluster.start()
        committing.join(60)

        assert "error" not in outcome, outcome.get("error")
        assert 503 in calls.statuses, f"no 503 was seen: {calls.statuses}"
        # Every retry after a 503 waited at least its Retry-After (2 s), less scheduling noise.
        gaps = [later - at for (at, status), (later, _) in zip(calls.answered, calls.answered[1:]) if status == 503]
        print(f"503 answers: {calls.statuses.count(503)}; waits after them: {[round(g, 2) for g in gaps]}")
        assert gaps and min(gaps) >= 1.9
        answer = outcome["answer"]
        assert isinstance(answer, dict)
        assert answer["results"][0]["result"] in ("applied", "duplicate")
        event_id = answer["results"][0]["eventId"]
        assert run.complete(items_total=10)["status"] == "succeeded"

    history = admin.history(run_id)
    assert [e.get("eventId") for e in history].count(event_id) == 1
    assert [e["data"].get("chunkId") for e in history if e["type"] == "items.committed"] == ["chunk-1", "chunk-2"]
    assert admin.get_run(run_id)["items"]["committed"] == 10


def test_the_heartbeat_thread_ends_with_the_session_and_an_escaping_error_fails_the_run(
        admin: Ledger, worker: Ledger) -> None:
    run_id = admin.register(lease_seconds=30)
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(ZeroDivisionError):
        with worker.claim(run_id) as run:
            assert run.heartbeat_alive
            with run.step("divide"):
                1 / 0
    assert not run.heartbeat_alive
    assert not any(t.name.startswith("run-ledger-heartbeat") for t in threading.enumerate() if t.name not in before)
    state = admin.get_run(run_id)
    assert state["status"] == "failed"
    assert state["errorClass"] == "unknown"
    assert "ZeroDivisionError" in state["errorMessage"]
    assert state["steps"][0]["outcome"] == "failed"


def test_a_claim_of_a_finished_run_raises_run_terminated(admin: Ledger, worker: Ledger) -> None:
    run_id = admin.register(lease_seconds=30)
    admin.cancel(run_id)
    with pytest.raises(RunTerminated) as ended:
        with worker.claim(run_id):
            pass
    assert ended.value.run_status == "cancelled"


def test_heartbeats_keep_a_short_lease_alive(admin: Ledger, worker: Ledger) -> None:
    run_id = admin.register(lease_seconds=2)
    with worker.claim(run_id) as run:
        run.start()
        time.sleep(5)  # more than twice the lease, plus the janitor's interval and grace
        assert not run.stopped.is_set()
        assert run.heartbeats_sent >= 3
        assert run.complete()["status"] == "succeeded"
