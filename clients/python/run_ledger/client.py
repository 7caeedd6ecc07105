"""A worker client for Run Ledger: standard library only."""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from .errors import IncompleteResults, Refused, RunTerminated, Unavailable

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "lost", "cancelled"})
# Answers that say this worker's part in the run is over, whatever the run's status.
ENDED_CODES = frozenset({"run-terminal", "lease-expired", "lease-lost"})

RequestHook = Callable[[str, str], None]
ResponseHook = Callable[[str, str, Optional[int]], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How retryable answers (429/503, ``retryable: true``) and dropped connections are retried.

    The delay doubles from ``initial_delay`` up to ``max_delay`` (with jitter), and is never
    shorter than the ledger's ``Retry-After``. A call gives up with :class:`Unavailable` after
    ``max_attempts`` attempts or when the next wait would pass ``max_elapsed`` seconds.
    """

    max_attempts: int = 10
    max_elapsed: float = 120.0
    initial_delay: float = 0.2
    max_delay: float = 10.0
    multiplier: float = 2.0

    def delay(self, attempt: int, retry_after: Optional[float]) -> float:
        backoff = min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1))
        backoff *= 0.5 + random.random() / 2
        return max(backoff, retry_after or 0.0)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _retry_after(headers: Mapping[str, str]) -> Optional[float]:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class Ledger:
    """The ledger's HTTP API, as an orchestrator (admin key) or a worker (worker key) uses it.

    ``key`` is sent as ``Authorization: Bearer <key>``. ``retry`` bounds how retryable answers
    are retried; ``timeout`` is the socket timeout of one attempt; ``on_request`` is called with
    (method, path) before every attempt and ``on_response`` with (method, path, status) after it
    (status ``None`` when the connection failed), for metrics and tests.
    """

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        retry: RetryPolicy = RetryPolicy(),
        timeout: float = 30.0,
        on_request: Optional[RequestHook] = None,
        on_response: Optional[ResponseHook] = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = key
        self.retry = retry
        self.timeout = timeout
        self.on_request = on_request
        self.on_response = on_response

    def __repr__(self) -> str:  # never shows the key
        return f"Ledger({self.base_url!r})"

    # -- transport ---------------------------------------------------------------------------

    def _once(self, method: str, path: str, body: Any, bearer: str) -> tuple[int, Mapping[str, str], Any]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {bearer}")
        request.add_header("Accept", "application/json, application/problem+json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.on_request is not None:
            self.on_request(method, path)
        status: Optional[int] = None
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status = response.status
                return response.status, _headers(response.headers.items()), _json(response.read())
        except urllib.error.HTTPError as error:
            status = error.code
            try:
                payload = _json(error.read())
            except (OSError, http.client.HTTPException):
                payload = None
            return error.code, _headers(error.headers.items()), payload
        finally:
            if self.on_response is not None:
                self.on_response(method, path, status)

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        bearer: Optional[str] = None,
        retry: Optional[RetryPolicy] = None,
        abort: Optional[threading.Event] = None,
        response_headers: Optional[dict[str, str]] = None,
    ) -> Any:
        """One request, retried while the answer is retryable; the same body every time."""
        policy = retry or self.retry
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            retry_after: Optional[float] = None
            last_status: Optional[int] = None
            last_problem: Mapping[str, Any] = {}
            try:
                status, headers, payload = self._once(method, path, body, bearer or self._key)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
                reason: str = f"connection failed: {getattr(error, 'reason', error)}"
            else:
                if status < 400:
                    if response_headers is not None:
                        response_headers.update(headers.items())
                    return payload
                problem = payload if isinstance(payload, dict) else {}
                flag = problem.get("retryable")
                retryable = flag if isinstance(flag, bool) else status in (429, 502, 503, 504)
                if not retryable:
                    raise Refused.from_problem(status, problem)
                retry_after = _retry_after(headers)
                last_status, last_problem = status, problem
                reason = f"{status} {problem.get('code', '')}".strip()

            wait = policy.delay(attempt, retry_after)
            if attempt >= policy.max_attempts or time.monotonic() - started + wait > policy.max_elapsed:
                raise Unavailable(f"{method} {path}: gave up after {attempt} attempts ({reason})",
                                  attempts=attempt, last_status=last_status, last_problem=last_problem)
            if abort is not None:
                if abort.wait(wait):
                    raise Unavailable(f"{method} {path}: abandoned ({reason})", attempts=attempt,
                                      last_status=last_status, last_problem=last_problem)
            else:
                time.sleep(wait)

    # -- orchestrator calls ------------------------------------------------------------------

    def register(
        self,
        run_id: Optional[str] = None,
        *,
        required_scores: Optional[Sequence[str]] = None,
        required_outputs: Optional[Sequence[str]] = None,
        expected_items: Optional[int] = None,
        lease_seconds: Optional[int] = None,
        board: Optional[str] = None,
        participant: Optional[str] = None,
        batch: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
    ) -> str:
        """Registers a run and returns its id. A run id is generated when none is given and sent,
        so that a retry after a lost answer finds the same run instead of making a second one."""
        body: dict[str, Any] = {"runId": run_id or _new_id("run")}
        for name, value in (
            ("requiredScores", list(required_scores) if required_scores is not None else None),
            ("requiredOutputs", list(required_outputs) if required_outputs is not None else None),
            ("expectedItems", expected_items),
            ("leaseSeconds", lease_seconds),
            ("board", board),
            ("participant", participant),
            ("batch", batch),
            ("labels", dict(labels) if labels is not None else None),
        ):
            if value is not None:
                body[name] = value
        answer = self._call("POST", "/api/runs", body)
        return str(answer["runId"])

    def cancel(self, run_id: str, reason: Optional[str] = None) -> dict[str, Any]:
        body = {"reason": reason} if reason else {}
        return dict(self._call("POST", f"/api/runs/{_seg(run_id)}/cancel", body))

    def get_run(self, run_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/runs/{_seg(run_id)}"))

    def list_runs(self, **filters: str) -> list[dict[str, Any]]:
        """Runs matching ``status``, ``board``, ``participant``, ``batch`` or ``anomaly`` (the first 500)."""
        query = urllib.parse.urlencode({**filters, "pageSize": "500"})
        return list(self._call("GET", f"/api/runs?{query}")["items"])

    def history(self, run_id: str) -> list[dict[str, Any]]:
        """Every event of the run, with what applying it did."""
        events: list[dict[str, Any]] = []
        after: Optional[int] = 0
        while after is not None:
            page = self._call("GET", f"/api/runs/{_seg(run_id)}/events?after={after}")
            events.extend(page["events"])
            after = page.get("next")
        return events

    def define_board(self, board_id: str, primary_score: str, direction: str = "max") -> dict[str, Any]:
        return dict(self._call("POST", "/api/boards",
                               {"id": board_id, "primaryScore": primary_score, "direction": direction}))

    def leaderboard(self, board_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/boards/{_seg(board_id)}/leaderboard"))

    def define_batch(self, batch_id: str, **definition: Any) -> dict[str, Any]:
        """``runIds=[...]``, ``labelSets=[...]`` and/or ``matrix={"labels": {...}}``, as the API takes them."""
        return dict(self._call("POST", "/api/batches", {"id": batch_id, **definition}))

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/batches/{_seg(batch_id)}"))

    def observe(self, run_id: str, source: str, status: str, *, observed_at: Optional[str] = None,
                detail: Optional[str] = None) -> dict[str, Any]:
        """Another system's view of the run; it never changes the ledger's status."""
        body: dict[str, Any] = {"source": source, "status": status, "observedAt": observed_at or _now()}
        if detail is not None:
            body["detail"] = detail
        return dict(self._call("POST", f"/api/runs/{_seg(run_id)}/observations", body))

    # -- worker calls ------------------------------------------------------------------------

    @contextlib.contextmanager
    def claim(self, run_id: str, worker: Optional[str] = None, *,
              heartbeat_interval: Optional[float] = None) -> Iterator["RunSession"]:
        """Takes the run's lease and yields a :class:`RunSession` that heartbeats in the background
        at a third of the lease. A generated claimId is sent, so that a retry after a lost answer
        gets this worker's own lease back instead of 409 lease-held.

        An exception escaping the block reports ``run.failed`` (error class ``unknown``) unless
        the run already ended; the heartbeat thread ends with the block.
        """
        name = worker or f"{socket.gethostname()}:{os.getpid()}"
        body = {"worker": name, "claimId": _new_id("claim")}
        path = f"/api/runs/{_seg(run_id)}/claim"
        try:
            headers: dict[str, str] = {}
            answer = self._call("POST", path, body, response_headers=headers)
        except Refused as refused:
            if refused.code in ENDED_CODES or refused.run_status in TERMINAL_STATUSES:
                raise RunTerminated(str(refused), type=refused.type, code=refused.code, detail=refused.detail,
                                    status=refused.status, run_status=refused.run_status,
                                    problem=refused.problem) from refused
            raise
        session = RunSession(self, run_id, answer, heartbeat_interval, _server_time(headers))
        session._start()
        try:
            yield session
        except BaseException as error:
            if not session.stopped.is_set() and not isinstance(error, RunTerminated):
                session._fail_quietly(error)
            raise
        finally:
            session._close()


class RunSession:
    """One claimed run, as its worker reports it. Created by :meth:`Ledger.claim`.

    ``stopped`` is set as soon as the ledger says the run ended (finished, cancelled, lost,
    lease expired or lost), whether a call or the heartbeat learned it; every later call raises
    :class:`RunTerminated`. Every event carries an eventId generated once and kept across retries.
    """

    def __init__(self, ledger: Ledger, run_id: str, claim: Mapping[str, Any],
                 heartbeat_interval: Optional[float], server_time: Optional[datetime] = None) -> None:
        self._ledger = ledger
        self.run_id = run_id
        self._token = str(claim["leaseToken"])
        self.lease_expires_at = _parse_time(str(claim["leaseExpiresAt"]))
        self.required_scores: tuple[str, ...] = tuple(claim.get("requiredScores") or ())
        self.required_outputs: tuple[str, ...] = tuple(claim.get("requiredOutputs") or ())
        expected = claim.get("expectedItems")
        self.expected_items: Optional[int] = int(expected) if expected is not None else None
        self.stopped = threading.Event()
        self.stop_reason: Optional[Refused] = None
        self.status: Optional[str] = None
        self.heartbeats_sent = 0
        self._acknowledged_scores: set[str] = set()
        self._acknowledged_outputs: set[str] = set()
        self._acknowledged_chunks: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._paused = threading.Event()
        # The lease's length by the ledger's own clock, whatever this machine's clock says: its
        # Date header is in whole seconds and may be up to a second stale, so two seconds are
        # taken off to never overestimate the lease.
        if server_time is not None:
            lease = (self.lease_expires_at - server_time).total_seconds() - 2.0
        else:
            lease = (self.lease_expires_at - datetime.now(timezone.utc)).total_seconds()
        lease = max(0.6, lease)
        self.heartbeat_interval = heartbeat_interval or max(0.2, lease / 3)
        self._thread = threading.Thread(target=self._heartbeat_loop, name=f"run-ledger-heartbeat-{run_id}",
                                        daemon=True)

    def __repr__(self) -> str:  # never shows the lease token
        return f"RunSession({self.run_id!r}, stopped={self.stopped.is_set()})"

    # -- reporting ---------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        """Reports ``run.started`` (optional: any report starts the run)."""
        return self._send({"type": "run.started"})

    @contextlib.contextmanager
    def step(self, name: str, step_id: Optional[str] = None) -> Iterator[str]:
        """``step.started``, then ``step.completed`` with outcome ``ok``, or ``failed`` when the
        block raises (the exception is re-raised). Yields the step id, which is always sent."""
        sid = step_id or _new_id("step")
        self._send({"type": "step.started", "stepId": sid, "name": name})
        try:
            yield sid
        except BaseException:
            if not self.stopped.is_set():
                with contextlib.suppress(Exception):
                    self._send({"type": "step.completed", "stepId": sid, "outcome": "failed"})
            raise
        self._send({"type": "step.completed", "stepId": sid, "outcome": "ok"})

    def report_scores(self, scores: Mapping[str, float]) -> dict[str, Any]:
        answer = self._send({"type": "scores.reported", "scores": {k: float(v) for k, v in scores.items()}})
        with self._lock:
            self._acknowledged_scores.update(scores)
        return answer

    def record_output(self, name: str, uri: str, sha256: Optional[str] = None,
                      bytes: Optional[int] = None) -> dict[str, Any]:
        event: dict[str, Any] = {"type": "output.recorded", "name": name, "uri": uri}
        if sha256 is not None:
            event["sha256"] = sha256
        if bytes is not None:
            event["bytes"] = bytes
        answer = self._send(event)
        with self._lock:
            self._acknowledged_outputs.add(name)
        return answer

    def commit_items(self, chunk_id: str, count: int) -> dict[str, Any]:
        answer = self._send({"type": "items.committed", "chunkId": chunk_id, "count": count})
        with self._lock:
            self._acknowledged_chunks[chunk_id] = count
        return answer

    @property
    def committed_items(self) -> int:
        """Items of the chunks this session committed and the ledger acknowledged."""
        with self._lock:
            return sum(self._acknowledged_chunks.values())

    def log(self, lines: Sequence[str]) -> dict[str, Any]:
        return self._send({"type": "log", "lines": list(lines)})

    def missing(self, items_total: Optional[int] = None) -> list[str]:
        """Required scores and outputs (from the claim) not yet acknowledged by the ledger, and
        the items short of the declared total (``expectedItems``, else ``items_total``) among
        the chunks this session committed."""
        with self._lock:
            missing = ([f"score:{s}" for s in self.required_scores if s not in self._acknowledged_scores]
                       + [f"output:{o}" for o in self.required_outputs if o not in self._acknowledged_outputs])
            declared = self.expected_items if self.expected_items is not None else items_total
            committed = sum(self._acknowledged_chunks.values())
        if declared is not None and committed < declared:
            missing.append(f"items:{declared - committed}")
        return missing

    def complete(self, items_total: Optional[int] = None, force: bool = False) -> dict[str, Any]:
        """Reports ``run.completed``. Raises :class:`IncompleteResults` without sending anything
        while a required score or output has not been acknowledged, or fewer items than declared
        were committed in this session, unless ``force=True`` (e.g. a worker resuming a run whose
        earlier session committed chunks)."""
        self._check()
        missing = self.missing(items_total)
        if missing and not force:
            raise IncompleteResults(missing)
        event: dict[str, Any] = {"type": "run.completed"}
        if items_total is not None:
            event["itemsTotal"] = items_total
        return self._send(event)

    def fail(self, error_class: str, message: str) -> dict[str, Any]:
        """Reports ``run.failed``; ``error_class`` is one of the ledger's classes (timeout,
        validation, provider, infrastructure, cancelled, unknown)."""
        return self._send({"type": "run.failed", "errorClass": error_class, "message": message})

    # -- heartbeats --------------------------------------------------------------------------

    def pause_heartbeats(self) -> None:
        """Stops sending heartbeats (to simulate a stalled worker); the thread keeps running."""
        self._paused.set()

    def resume_heartbeats(self) -> None:
        self._paused.clear()

    @property
    def heartbeat_alive(self) -> bool:
        return self._thread.is_alive()

    def _heartbeat_loop(self) -> None:
        interval = self.heartbeat_interval
        # A heartbeat is retried only until the next one is due.
        policy = RetryPolicy(max_attempts=self._ledger.retry.max_attempts, max_elapsed=interval,
                             initial_delay=min(self._ledger.retry.initial_delay, interval / 4),
                             max_delay=interval / 2)
        while not self._closing.wait(interval):
            if self.stopped.is_set():
                return
            if self._paused.is_set():
                continue
            try:
                self._send({"type": "heartbeat"}, retry=policy, abort=self._closing)
                self.heartbeats_sent += 1
            except RunTerminated:
                return
            except Exception:  # noqa: BLE001 - a missed heartbeat is retried at the next interval
                continue

    # -- internals ---------------------------------------------------------------------------

    def _start(self) -> None:
        self._thread.start()

    def _close(self) -> None:
        self._closing.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self._ledger.timeout + 5)

    def _check(self) -> None:
        if self.stopped.is_set():
            reason = self.stop_reason
            if reason is None:
                raise RunTerminated(f"run {self.run_id} has ended", run_status=self.status)
            raise RunTerminated(str(reason), type=reason.type, code=reason.code, detail=reason.detail,
                                status=reason.status, run_status=reason.run_status, problem=reason.problem)

    def _stop(self, reason: Optional[Refused], status: Optional[str]) -> None:
        with self._lock:
            if not self.stopped.is_set():
                self.stop_reason = reason
                self.status = status or self.status
                self.stopped.set()

    def _send(self, event: dict[str, Any], *, retry: Optional[RetryPolicy] = None,
              abort: Optional[threading.Event] = None) -> dict[str, Any]:
        self._check()
        event = {**event, "eventId": _new_id("evt"), "occurredAt": _now()}
        try:
            answer = self._ledger._call("POST", f"/api/runs/{_seg(self.run_id)}/events", event,
                                        bearer=self._token, retry=retry, abort=abort)
        except RunTerminated:
            raise
        except Refused as refused:
            if refused.code in ENDED_CODES or refused.run_status in TERMINAL_STATUSES:
                ended = RunTerminated(str(refused), type=refused.type, code=refused.code, detail=refused.detail,
                                      status=refused.status, run_status=refused.run_status, problem=refused.problem)
                self._stop(ended, refused.run_status)
                raise ended from refused
            raise
        result = dict(answer)
        status = result.get("status")
        if isinstance(status, str):
            self.status = status
            if status in TERMINAL_STATUSES:
                self._stop(None, status)
        return result

    def _fail_quietly(self, error: BaseException) -> None:
        message = f"{type(error).__name__}: {error}"[:8000]
        with contextlib.suppress(Exception):
            self._send({"type": "run.failed", "errorClass": "unknown", "message": message},
                       retry=RetryPolicy(max_attempts=3, max_elapsed=10.0))


def _server_time(headers: Mapping[str, str]) -> Optional[datetime]:
    value = headers.get("date")
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def _headers(items: Any) -> dict[str, str]:
    """Response headers with lower-case names."""
    return {str(name).lower(): str(value) for name, value in items}


def _seg(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
