"""Fixtures: a real ledger process on a real PostgreSQL.

- ``LEDGER_URL`` (with ``LEDGER_ADMIN_KEY``, ``LEDGER_WORKER_KEY``): use that running ledger.
- otherwise the built service is started (``dotnet build`` first if the dll is missing;
  ``LEDGER_CONFIGURATION`` picks Debug or Release) on a free port, with a fresh database on
  the server named by ``LEDGER_TEST_CONNECTION`` (created with psql, dropped at the end), or,
  without it, on a private PostgreSQL cluster started for the session.

The database-restart test always uses a private cluster of its own (``private_ledger``).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator, Optional

import pytest

HERE = Path(__file__).resolve().parent
CLIENT = HERE.parent
REPO = CLIENT.parent.parent
sys.path.insert(0, str(CLIENT))

from run_ledger import Ledger, RetryPolicy  # noqa: E402

ADMIN_KEY = "py-admin-key-for-tests"
WORKER_KEY = "py-worker-key-for-tests"
READ_KEY = "py-read-key-for-tests"
# Short enough that a lost run is decided within seconds.
JANITOR_INTERVAL = 1
JANITOR_GRACE = 1


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port for a process that binds it later, outside the kernel's ephemeral range (a port of
    that range, free when picked, can be held by an outgoing connection a moment later), and
    handed out once per session."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low, ephemeral_high = (int(v) for v in f.read().split()[:2])
    except (OSError, ValueError):
        ephemeral_low, ephemeral_high = 32768, 60999
    if ephemeral_low > 21000:
        low, high = 20000, min(ephemeral_low, 32000)
    elif ephemeral_high < 64000:
        low, high = ephemeral_high + 1, 65000
    else:
        low, high = 20000, 32000
    for _ in range(500):
        port = random.randrange(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port between {low} and {high}")


def _as_postgres(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    if os.geteuid() != 0:
        return args
    runuser = shutil.which("runuser") or next(
        (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.path.exists(p)), None)
    if runuser is None:
        pytest.skip("running as root without runuser: cannot start a private PostgreSQL")
    return [runuser, "-u", "postgres", "--", *args]


class PrivatePostgres:
    """A throwaway cluster under /var/tmp, reachable on 127.0.0.1:port, trust auth."""

    def __init__(self) -> None:
        if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
            pytest.skip("initdb/pg_ctl not on PATH: no private PostgreSQL")
        self.dir = tempfile.mkdtemp(prefix="run-ledger-py-pg.", dir="/var/tmp")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self.port = free_port()
        subprocess.run(_as_postgres(["initdb", "-D", self.dir, "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
                       check=True, stdout=subprocess.DEVNULL)
        self.start()

    @property
    def connection(self) -> str:
        return f"Host=127.0.0.1;Port={self.port};Username=postgres;Database=postgres"

    def start(self) -> None:
        subprocess.run(_as_postgres([
            "pg_ctl", "-D", self.dir, "-l", f"{self.dir}/log", "-w", "-t", "60",
            "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start"]),
            check=True, stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        subprocess.run(_as_postgres(["pg_ctl", "-D", self.dir, "-m", "fast", "-w", "stop"]),
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _npgsql_to_psql(connection: str) -> tuple[list[str], dict[str, str]]:
    parts = dict(p.split("=", 1) for p in connection.split(";") if "=" in p)
    lower = {k.strip().lower(): v.strip() for k, v in parts.items()}
    args = ["-h", lower.get("host", "127.0.0.1"), "-p", lower.get("port", "5432"),
            "-U", lower.get("username", lower.get("user id", lower.get("user", "postgres"))),
            "-d", lower.get("database", "postgres"), "-v", "ON_ERROR_STOP=1", "-q"]
    env = dict(os.environ)
    if "password" in lower:
        env["PGPASSWORD"] = lower["password"]
    return args, env


class ScratchDatabase:
    """A fresh database on an existing server, dropped at the end."""

    def __init__(self, server: str) -> None:
        if shutil.which("psql") is None:
            pytest.skip("psql is not on PATH: cannot create a test database")
        self.server = server
        self.name = f"ledger_py_{uuid.uuid4().hex[:12]}"
        args, env = _npgsql_to_psql(server)
        subprocess.run(["psql", *args, "-c", f'create database "{self.name}"'], check=True, env=env)
        parts = [p for p in server.split(";") if p and not p.lower().startswith("database=")]
        self.connection = ";".join(parts + [f"Database={self.name}"])

    def drop(self) -> None:
        args, env = _npgsql_to_psql(self.server)
        subprocess.run(["psql", *args, "-c", f'drop database if exists "{self.name}" with (force)'],
                       check=False, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ledger_dll() -> Path:
    configuration = os.environ.get("LEDGER_CONFIGURATION", "Debug")
    dll = REPO / "src" / "Ledger" / "bin" / configuration / "net10.0" / "Ledger.dll"
    if not dll.exists():
        subprocess.run(["dotnet", "build", str(REPO / "src" / "Ledger" / "Ledger.csproj"), "-c", configuration,
                        "-v", "quiet", "-nologo"], check=True)
    return dll


class LedgerProcess:
    """The built service on a free port, with test keys and a fast janitor."""

    def __init__(self, connection: str, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkstemp(prefix=f"run-ledger-{name}.", suffix=".log")[1])
        env = dict(os.environ)
        env.update({
            "ASPNETCORE_ENVIRONMENT": "Production",
            "ConnectionStrings__Ledger": connection,
            "Ledger__AdminKey": ADMIN_KEY,
            "Ledger__WorkerKeys__0": WORKER_KEY,
            "Ledger__ReadKeys__0": READ_KEY,
            "Ledger__Janitor__Enabled": "true",
            "Ledger__Janitor__IntervalSeconds": str(JANITOR_INTERVAL),
            "Ledger__Janitor__GraceSeconds": str(JANITOR_GRACE),
        })
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(["dotnet", str(ledger_dll()), "--urls", self.url],
                                        env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the ledger exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the ledger did not become healthy:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        self.log_path.unlink(missing_ok=True)


class Target:
    def __init__(self, url: str, admin_key: str, worker_key: str) -> None:
        self.url = url
        self.admin_key = admin_key
        self.worker_key = worker_key

    def admin(self, **options: object) -> Ledger:
        return Ledger(self.url, self.admin_key, **options)  # type: ignore[arg-type]

    def worker(self, **options: object) -> Ledger:
        return Ledger(self.url, self.worker_key, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def target() -> Iterator[Target]:
    url = os.environ.get("LEDGER_URL")
    if url:
        yield Target(url, os.environ.get("LEDGER_ADMIN_KEY", "dev-admin-key"),
                     os.environ.get("LEDGER_WORKER_KEY", "dev-worker-key"))
        return
    server = os.environ.get("LEDGER_TEST_CONNECTION")
    cluster: Optional[PrivatePostgres] = None
    database: Optional[ScratchDatabase] = None
    if server:
        database = ScratchDatabase(server)
        connection = database.connection
    else:
        cluster = PrivatePostgres()
        connection = cluster.connection
    process: Optional[LedgerProcess] = None
    try:
        process = LedgerProcess(connection, "session")
        yield Target(process.url, ADMIN_KEY, WORKER_KEY)
    finally:
        if process is not None:
            process.stop()
        if database is not None:
            database.drop()
        if cluster is not None:
            cluster.destroy()


@pytest.fixture()
def admin(target: Target) -> Ledger:
    return target.admin(retry=RetryPolicy(max_attempts=5, max_elapsed=20))


@pytest.fixture()
def worker(target: Target) -> Ledger:
    return target.worker(retry=RetryPolicy(max_attempts=5, max_elapsed=20))


@pytest.fixture()
def private_ledger() -> Iterator[tuple[PrivatePostgres, Target]]:
    """A ledger on a PostgreSQL cluster of the test's own, which the test may stop and restart."""
    cluster = PrivatePostgres()
    process: Optional[LedgerProcess] = None
    try:
        process = LedgerProcess(cluster.connection, "private")
        yield cluster, Target(process.url, ADMIN_KEY, WORKER_KEY)
    finally:
        if process is not None:
            process.stop()
        cluster.destroy()
