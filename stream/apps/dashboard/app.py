"""`cryptosent dashboard`: a Starlette app served by uvicorn, fed by `DashboardFeed`.

Routes: `/` (the page), `/static/*` (the page's script and the vendored uPlot), `/events`
(server-sent events: a full `snapshot` whenever something changed, at most every
`push_interval_s`), `/api/snapshot` (the same JSON, once), `/healthz`. `?asset=ETH` on `/events`
and `/api/snapshot` selects one asset's view (the page's asset selector); without it, all assets.

Whole snapshots rather than deltas: they are a few tens of kB, a reconnecting browser needs no
replay logic, and the page cannot drift from the server's state.

In-process use (the demo, tests)::

    with Dashboard(settings.dashboard, settings.kafka, settings.topics, settings.alerts) as dash:
        print(dash.url)
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ops.errors import UserError
from ops.logging import get_logger
from ops.settings import AlertsSettings, DashboardSettings, KafkaSettings, TopicsSettings
from stream.apps.dashboard.feed import DashboardFeed
from stream.apps.dashboard.state import ANY_ASSET, DashboardState
from stream.core.rules import RuleConfig

log = get_logger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
# What an `asset` query parameter may be: a canonical ticker. Anything else is a 400.
_TICKER = re.compile(r"[A-Z0-9]{1,20}")


def _asset_param(request: Request) -> tuple[str | None, Response | None]:
    asset = request.query_params.get("asset") or None
    if asset is not None and not _TICKER.fullmatch(asset):
        return None, JSONResponse({"error": "asset must be a ticker (A-Z, 0-9)"}, 400)
    return asset, None


def create_app(
    state: DashboardState,
    feed: DashboardFeed | None,
    *,
    push_interval_s: float = 1.0,
    stopping: threading.Event | None = None,
) -> Starlette:
    stopping = stopping or threading.Event()

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def snapshot(request: Request) -> Response:
        asset, bad = _asset_param(request)
        return bad or JSONResponse(state.snapshot(asset))

    async def healthz(request: Request) -> Response:
        ok = feed is None or (feed.alive and feed.error is None)
        body = {
            "status": "ok" if ok else "unavailable",
            "feed": None
            if feed is None
            else {"alive": feed.alive, "ready": feed.ready.is_set(), "error": feed.error},
            "records": state.records,
            "alerts": state.alert_count,
            "last_record_at": state.last_record_at,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    async def events(request: Request) -> Response:
        from sse_starlette.sse import EventSourceResponse

        asset, bad = _asset_param(request)
        if bad is not None:
            return bad

        async def stream() -> AsyncIterator[dict[str, str]]:
            sent = -1
            while not stopping.is_set():
                if state.version != sent:
                    sent = state.version
                    yield {"event": "snapshot", "data": json.dumps(state.snapshot(asset))}
                await asyncio.sleep(push_interval_s)

        # A generator that ends on `stopping` lets the server shut down from any thread; the
        # library's own shutdown detection only sees uvicorn running in the main thread.
        response: Response = EventSourceResponse(stream(), ping=15)
        return response

    return Starlette(
        routes=[
            Route("/", index),
            Route("/healthz", healthz),
            Route("/api/snapshot", snapshot),
            Route("/events", events),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ]
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            hint="pick another --port, or 0 for a free one",
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class Dashboard:
    """The feed thread plus the web server thread. `start()` returns the URL once both run."""

    def __init__(
        self,
        cfg: DashboardSettings,
        kafka: KafkaSettings,
        topics: TopicsSettings,
        alerts: AlertsSettings | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        # The alerts section only for what the page shows of it: the thresholds it draws, and
        # how far back `alerts` may re-publish an alert (the de-duplication horizon).
        alerts = alerts or AlertsSettings()
        self.cfg = cfg
        self.host = host if host is not None else cfg.host
        self.port = port if port is not None else cfg.port
        self.state = DashboardState(
            bucket_s=cfg.bucket_s,
            rolling_s=cfg.rolling_s,
            max_points=cfg.max_points,
            recent=cfg.recent,
            time_axis=cfg.time_axis,
            thresholds=(alerts.bullish_threshold_low, alerts.bullish_threshold_high),
            alert_horizon_s=alerts.lookback_s + max(alerts.windows_s),
            max_assets=cfg.max_assets,
            attribution=alerts.assets.attribution,
            asset_thresholds={
                key: (rules.threshold_low, rules.threshold_high)
                for key in {ANY_ASSET, *alerts.assets.rules}
                for rules in [RuleConfig.from_settings(alerts, key)]
            },
        )
        self.feed = DashboardFeed(cfg, kafka, topics, self.state)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: Any = None
        self.url = ""

    def start(self, timeout: float = 30.0) -> str:
        import uvicorn

        self.feed.check()
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        shown = "[::1]" if shown == "::" else (f"[{shown}]" if ":" in shown else shown)
        self.url = f"http://{shown}:{self.port}/"
        app = create_app(
            self.state,
            self.feed,
            push_interval_s=self.cfg.push_interval_s,
            stopping=self._stop,
        )
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=2,
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        feed = threading.Thread(
            target=self.feed.run, args=(self._stop,), name="dashboard-feed", daemon=True
        )
        web = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="dashboard-web", daemon=True
        )
        self._threads = [feed, web]
        feed.start()
        web.start()
        if not self._wait_ready(timeout) or not self._wait_started(timeout):
            self.stop()
            raise UserError(
                f"the dashboard did not start within {timeout:.0f}s",
                hint=self.feed.error or "check the Kafka connection",
            )
        log.info("dashboard_started", url=self.url)
        return self.url

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.feed.ready.is_set() and self._threads[0].is_alive():
            if time.monotonic() > deadline:
                return False
            self._stop.wait(0.02)
        return self.feed.ready.is_set()

    def _wait_started(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._server.started and self._threads[1].is_alive():
            if time.monotonic() > deadline:
                return False
            self._stop.wait(0.02)
        return bool(self._server.started)

    @property
    def running(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True
        for thread in self._threads:
            thread.join(timeout)

    def __enter__(self) -> Dashboard:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
