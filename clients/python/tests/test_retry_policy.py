"""The retry loop against a scripted HTTP server: no ledger needed."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from run_ledger import Ledger, Refused, RetryPolicy, Unavailable


class Script:
    def __init__(self, answers: list[tuple[int, dict[str, Any], dict[str, str]]]) -> None:
        self.answers = answers
        self.bodies: list[bytes] = []
        self.times: list[float] = []


@pytest.fixture()
def scripted() -> Iterator[tuple[str, Script]]:
    script = Script([])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server convention
            script.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            script.times.append(time.monotonic())
            status, body, headers = script.answers.pop(0) if script.answers else (200, {"runId": "r"}, {})
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()


def test_429_is_retried_after_retry_after_with_the_same_body(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.answers = [(429, {"code": "rate-limited", "retryable": True}, {"Retry-After": "1"})] * 2
    ledger = Ledger(url, "k", retry=RetryPolicy(initial_delay=0.01))
    assert ledger.register(required_scores=["a"]) == "r"
    assert len(script.bodies) == 3
    assert len(set(script.bodies)) == 1, "a retry resends the same runId"
    assert script.times[1] - script.times[0] >= 0.95
    assert script.times[2] - script.times[1] >= 0.95


def test_retryable_false_is_raised_at_once(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.answers = [(422, {"type": "urn:run-ledger:problem:invalid-payload", "code": "invalid-payload",
                             "retryable": False, "detail": "bad", "runStatus": "running"}, {})]
    with pytest.raises(Refused) as refused:
        Ledger(url, "k").register()
    assert len(script.bodies) == 1
    assert (refused.value.status, refused.value.code, refused.value.run_status) == (422, "invalid-payload", "running")


def test_a_refusal_says_what_to_fix_field_by_field(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.answers = [(422, {"type": "urn:run-ledger:problem:invalid-payload", "code": "invalid-payload", "retryable": False,
                             "detail": "Fix the listed fields; resending the same payload will be refused again.",
                             "errors": {"errorClass": ["'oops' is not an error class."], "leaseSeconds": ["Must be 1 to 86400.", "An integer."]},
                             "allowed": ["timeout", "validation"]}, {})]
    with pytest.raises(Refused) as refused:
        Ledger(url, "k").register()
    said = str(refused.value)
    assert said.startswith("422 invalid-payload: Fix the listed fields")
    assert "errorClass: 'oops' is not an error class." in said
    assert "leaseSeconds: Must be 1 to 86400. An integer." in said
    assert "allowed: timeout, validation" in said


def test_retries_are_bounded_by_attempts(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.answers = [(503, {"code": "database-unavailable", "retryable": True}, {})] * 10
    policy = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02)
    with pytest.raises(Unavailable) as gave_up:
        Ledger(url, "k", retry=policy).register()
    assert gave_up.value.attempts == 3
    assert gave_up.value.last_status == 503
    assert len(script.bodies) == 3


def test_retries_are_bounded_by_time(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.answers = [(503, {"code": "database-unavailable", "retryable": True}, {"Retry-After": "5"})] * 10
    started = time.monotonic()
    with pytest.raises(Unavailable):
        Ledger(url, "k", retry=RetryPolicy(max_elapsed=2.0)).register()
    assert time.monotonic() - started < 1.0, "a wait that would pass max_elapsed is not started"
    assert len(script.bodies) == 1


def test_a_refused_connection_is_retried_then_given_up() -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    calls: list[str] = []
    ledger = Ledger(f"http://127.0.0.1:{port}", "k", retry=RetryPolicy(max_attempts=3, initial_delay=0.01),
                    on_request=lambda m, p: calls.append(p))
    with pytest.raises(Unavailable) as gave_up:
        ledger.get_run("r")
    assert len(calls) == 3
    assert "connection failed" in str(gave_up.value)
