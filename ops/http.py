"""One small HTTP server for every long-running command: `/metrics` (Prometheus, from the
command's own registry), `/healthz` (the process answers) and `/readyz` (503 until ready).

Each service has its own `CollectorRegistry` (never the global one) so several services, e.g. serve
and alerts inside the demo or two workers in one test process, can run side by side.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.exposition import generate_latest


def always_ready() -> tuple[bool, dict[str, Any]]:
    return True, {}


ReadyFn = Callable[[], tuple[bool, dict[str, Any]]]


class HealthServer:
    """`/metrics`, `/healthz` (the process answers) and `/readyz` (503 until ready)."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        ready: ReadyFn = always_ready,
        name: str = "http",
    ) -> None:
        self._registry = registry
        self._name = name
        self._ready = ready
        handler = self._handler()
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(outer._registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b'{"status":"ok"}', "application/json")
                elif path == "/readyz":
                    ok, detail = outer._ready()
                    body = json.dumps({"ready": ok, **detail}).encode()
                    self._send(200 if ok else 503, body, "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # scrapes every few seconds would drown the structured log

        return Handler

    def start(self) -> HealthServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"{self._name}-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(2.0)
