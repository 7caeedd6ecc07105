"""A tiny HTTP proxy that forwards a request and then drops the connection before answering.

It models the worst moment for a worker: the ledger acted, the answer never arrived. One
request per connection (urllib sends ``Connection: close``).
"""

from __future__ import annotations

import http.client
import socket
import threading
from typing import Callable

DropRule = Callable[[str, str], bool]


class DroppingProxy:
    def __init__(self, upstream_host: str, upstream_port: int, drop: DropRule) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.drop = drop
        self.dropped: list[tuple[str, str]] = []
        self.forwarded: list[tuple[str, str]] = []
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self.port = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        self._server.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            stream = client.makefile("rb")
            request_line = stream.readline().decode("latin-1").strip()
            if not request_line:
                return
            method, path, _ = request_line.split(" ", 2)
            headers: list[tuple[str, str]] = []
            length = 0
            while True:
                line = stream.readline().decode("latin-1")
                if line in ("\r\n", "\n", ""):
                    break
                name, value = line.split(":", 1)
                headers.append((name.strip(), value.strip()))
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            body = stream.read(length) if length else None

            upstream = http.client.HTTPConnection(*self.upstream, timeout=30)
            upstream.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                upstream.putheader(name, value)
            upstream.endheaders(body)
            response = upstream.getresponse()
            payload = response.read()
            upstream.close()

            if self.drop(method, path):
                self.dropped.append((method, path))
                # The ledger has acted; the worker never hears of it.
                client.shutdown(socket.SHUT_RDWR)
                return
            self.forwarded.append((method, path))
            head = [f"HTTP/1.1 {response.status} {response.reason}"]
            for name, value in response.getheaders():
                if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                    head.append(f"{name}: {value}")
            head += [f"Content-Length: {len(payload)}", "Connection: close", "", ""]
            client.sendall("\r\n".join(head).encode("latin-1") + payload)


def first_n(method: str, path_contains: str, n: int = 1) -> DropRule:
    """Drops the first ``n`` requests of ``method`` whose path contains ``path_contains``."""
    seen = {"count": 0}
    lock = threading.Lock()

    def rule(m: str, p: str) -> bool:
        if m != method or path_contains not in p:
            return False
        with lock:
            seen["count"] += 1
            return seen["count"] <= n

    return rule
