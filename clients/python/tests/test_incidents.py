"""The four seed incidents replayed against the test ledger (examples/incidents/replay.py)."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import pytest

from conftest import REPO, Target

spec = importlib.util.spec_from_file_location("incident_replay", REPO / "examples" / "incidents" / "replay.py")
assert spec is not None and spec.loader is not None
replay = importlib.util.module_from_spec(spec)
sys.modules["incident_replay"] = replay
spec.loader.exec_module(replay)


@pytest.fixture(scope="module")
def replays(target: Target) -> dict[str, Any]:
    done = replay.replay_all(target.url, target.admin_key, target.worker_key, timeout=60)
    for r in done:
        print("\n".join(r.lines(target.url)))
    return {r.seed: r for r in done}


def status(side: Any) -> str:
    return str(side.ledger["status"])


def test_seed_000_finished_without_scores(replays: dict[str, Any]) -> None:
    r = replays["000"]
    assert r.verdict_ok, r.problems
    assert status(r.naive).startswith("failed (reason: incomplete-results)")
    assert r.naive.ledger["on leaderboard"] is False
    assert "completed-before-results" in r.naive.ledger["anomalies"]
    assert status(r.client).startswith("succeeded")
    assert r.client.ledger["on leaderboard"] is True


def test_seed_001_lost_stays_lost_and_the_client_never_sends_the_ghost_completion(replays: dict[str, Any]) -> None:
    r = replays["001"]
    assert r.verdict_ok, r.problems
    assert status(r.naive).startswith("lost (reason: lease-expired)")
    assert "late-completion" in r.naive.ledger["anomalies"]
    assert r.naive.ledger["rejections"].count("invalid-payload") == 5
    assert status(r.client).startswith("lost")
    assert "late-completion" not in r.client.ledger["anomalies"]


def test_seed_002_one_status_per_run_aliases_and_missing_executions(replays: dict[str, Any]) -> None:
    r = replays["002"]
    assert r.verdict_ok, r.problems
    assert len(r.naive.ledger["status-mismatch (ledger failed, modal succeeded)"]) == 1
    assert len(r.naive.ledger["missing"]) == 1
    assert "complete True" in r.client.ledger["batch"]


def test_seed_003_a_checkpoint_above_the_committed_data_never_succeeds(replays: dict[str, Any]) -> None:
    r = replays["003"]
    assert r.verdict_ok, r.problems
    assert status(r.naive).startswith("failed (reason: incomplete-results)")
    assert status(r.client).startswith("failed (reason: infrastructure)")


def test_the_runs_to_open_are_the_consoles_pages(replays: dict[str, Any], target: Target) -> None:
    """A link a person clicks in a terminal: the console's /runs/{id}, not the API's (401 JSON in a browser)."""
    import urllib.request

    lines = [line.strip() for r in replays.values() for line in r.lines(target.url) if line.strip().startswith("open:")]
    assert lines, "no run to open"
    for line in lines:
        url = line.removeprefix("open:").strip()
        assert url.startswith(f"{target.url}/runs/"), line
        assert "/api/" not in url, line
    # Without a session the console answers with its sign-in page: HTML, not problem details.
    with urllib.request.urlopen(lines[0].removeprefix("open:").strip()) as page:
        assert page.headers.get_content_type() == "text/html"
        assert 'name="key"' in page.read().decode()
