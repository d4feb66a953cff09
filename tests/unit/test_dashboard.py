"""The dashboard's state and web app, without Kafka."""

from __future__ import annotations

import ast
import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from schemas.alerts import Alert, AlertDirection, AlertKind
from schemas.messages import Label, SentimentOut, SkipReason, SourceRef, Status
from stream.apps.dashboard.app import STATIC_DIR, create_app
from stream.apps.dashboard.state import DashboardState

T0 = 1_767_225_600


def rec(
    t: float,
    positive: bool | None,
    id: str = "x",
    event_t: float | None = None,
    assets: tuple[str, ...] = (),
) -> SentimentOut:
    common = {
        "assets": list(assets),
        "id": id,
        "model_version": "m",
        "source": SourceRef(topic="t", partition=0, offset=0),
        "processed_time": datetime.fromtimestamp(t, tz=UTC),
        "event_time": None if event_t is None else datetime.fromtimestamp(event_t, tz=UTC),
        "text": "<b>to the moon</b>",
    }
    if positive is None:
        return SentimentOut(status=Status.SKIPPED, skip_reason=SkipReason.TOO_SHORT, **common)
    return SentimentOut(
        status=Status.CLASSIFIED,
        label=Label.POSITIVE if positive else Label.NEGATIVE,
        p_positive=0.8 if positive else 0.3,
        p_negative=0.2 if positive else 0.7,
        **common,
    )


def alert(i: int, asset: str | None = None) -> Alert:
    start = datetime.fromtimestamp(T0 + 60 * i, tz=UTC)
    return Alert(
        alert_id=f"a{i}{asset or ''}",
        asset=asset,
        kind=AlertKind.THRESHOLD_CROSSED,
        direction=AlertDirection.UP,
        window_s=60,
        window_start=start,
        window_end=start,
        bullish_ratio=0.8,
        volume=10,
        skipped=0,
        value=0.8,
        baseline=0.7,
        message="up",
        emitted_at=start,
    )


def test_rolling_ratio_and_buckets() -> None:
    state = DashboardState(bucket_s=10, rolling_s=20)
    state.add_record(rec(T0 + 1, True))  # bucket 0
    state.add_record(rec(T0 + 2, False))  # bucket 0
    state.add_record(rec(T0 + 11, True))  # bucket 10
    state.add_record(rec(T0 + 35, True))  # bucket 30: bucket 0 left the 20 s span
    state.add_record(rec(T0 + 36, None))  # skipped
    snap = state.snapshot()
    s = snap["series"]
    assert s["t"] == [T0, T0 + 10, T0 + 30]
    assert s["volume"] == [2, 1, 1]
    assert s["skipped"] == [0, 0, 1]
    assert s["bucket_ratio"] == [0.5, 1.0, 1.0]
    assert s["ratio"] == [0.5, pytest.approx(2 / 3, abs=1e-4), 1.0]
    assert snap["totals"]["classified"] == 4
    assert snap["totals"]["skipped"] == 1
    assert [t["id"] for t in snap["tweets"]] == ["x"] * 4


def test_event_time_axis_and_fallback() -> None:
    state = DashboardState(bucket_s=60, time_axis="event")
    state.add_record(rec(T0 + 999, True, event_t=T0 + 5))
    state.add_record(rec(T0 + 61, True))  # no event time: placed by processed time
    assert state.snapshot()["series"]["t"] == [T0, T0 + 60]


def test_buckets_are_capped_and_alerts_deduplicated() -> None:
    state = DashboardState(bucket_s=1, max_points=10, recent=3)
    for i in range(25):
        state.add_record(rec(T0 + i, True, id=str(i)))
    state.add_record(rec(T0, True))  # older than everything kept
    snap = state.snapshot()
    assert snap["series"]["t"] == [T0 + i for i in range(15, 25)]
    assert [t["id"] for t in snap["tweets"]] == ["x", "24", "23"]
    for i in (1, 2, 2, 1, 3):
        state.add_alert(alert(i))
    assert [a["alert_id"] for a in state.snapshot()["alerts"]] == ["a3", "a2", "a1"]


def test_static_assets_are_vendored_not_fetched() -> None:
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    for asset in ("uPlot.iife.min.js", "uPlot.min.css", "dashboard.js"):
        assert f"/static/{asset}" in html
        assert (STATIC_DIR / asset).is_file()
    assert (STATIC_DIR / "uPlot.LICENSE").is_file()
    everything = html + (STATIC_DIR / "dashboard.js").read_text(encoding="utf-8")
    assert "http://" not in everything
    assert "https://" not in everything
    assert ".innerHTML" not in everything  # tweets are untrusted text


def test_routes() -> None:
    state = DashboardState()
    state.add_record(rec(T0, True, id="tweet-1"))
    stopping = threading.Event()
    app = create_app(state, None, push_interval_s=0.05, stopping=stopping)
    with TestClient(app) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        page = client.get("/")
        assert page.status_code == 200
        assert 'id="chart"' in page.text
        assert client.get("/static/uPlot.iife.min.js").status_code == 200
        assert client.get("/api/snapshot").json()["tweets"][0]["id"] == "tweet-1"
        with client.stream("GET", "/events") as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            lines = events.iter_lines()
            assert next(line for line in lines if line.startswith("event:")) == "event: snapshot"
            data = next(line for line in lines if line.startswith("data:"))
            assert json.loads(data[len("data:") :])["totals"]["classified"] == 1
            stopping.set()


def test_alert_ids_are_remembered_only_within_the_horizon() -> None:
    state = DashboardState(alert_horizon_s=120, recent=5)
    for i in range(100):
        state.add_alert(alert(i))
    assert state.alert_count == 100
    assert state.known_alert_ids <= 3  # windows ending within 120 s of the newest one
    state.add_alert(alert(98))  # a repeat within the horizon: shown once
    assert state.alert_count == 100
    assert [a["alert_id"] for a in state.snapshot()["alerts"]][:2] == ["a99", "a98"]
    # A repeat from beyond the horizon is no longer recognised (the trade for bounded memory).
    state.add_alert(alert(0))
    assert state.alert_count == 101


# -- layering --------------------------------------------------------------------------------

APPS = Path(__file__).resolve().parents[2] / "stream" / "apps"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def forbidden(rel: Path, modules: set[str]) -> list[str]:
    """The project modules that `rel` (a path under stream/apps) must not import."""
    own = "stream.apps." + rel.parts[0] if len(rel.parts) > 1 else None
    return sorted(
        m
        for m in modules
        if m.split(".")[0] in {"stream", "trainer", "cryptosent"}
        and not m.startswith("stream.core")
        and not (own is not None and (m == own or m.startswith(own + ".")))
    )


def test_apps_depend_only_on_core_ops_schemas_and_themselves() -> None:
    """Every app may use `stream.core`, `ops` and `schemas`, and its own modules; never serve's
    shell, the model, or another app (the dashboard reads alerts from Kafka, not from the
    alerts shell)."""
    files = sorted(APPS.rglob("*.py"))
    assert len(files) >= 8
    bad = {
        str(f.relative_to(APPS)): forbidden(f.relative_to(APPS), imported_modules(f)) for f in files
    }
    assert not {k: v for k, v in bad.items() if v}, bad
    # The rule itself catches what it is for.
    dashboard = Path("dashboard/feed.py")
    assert forbidden(dashboard, {"stream.apps.alerts.publisher", "stream.consumer"}) == [
        "stream.apps.alerts.publisher",
        "stream.consumer",
    ]
    assert forbidden(dashboard, {"stream.apps.dashboard.state", "stream.core.rules"}) == []
    assert forbidden(Path("tail.py"), {"stream.apps.replay"}) == ["stream.apps.replay"]


# -- per-asset views ---------------------------------------------------------------------------


def test_per_asset_views_series_tweets_and_alerts() -> None:
    state = DashboardState(bucket_s=10, rolling_s=10, asset_thresholds={"*": (0.2, 0.8)})
    state.add_record(rec(T0, True, id="e1", assets=("ETH", "BTC")))
    state.add_record(rec(T0 + 1, False, id="b1", assets=("BTC",)))
    state.add_record(rec(T0 + 11, True, id="e2", assets=("ETH",)))
    state.add_record(rec(T0 + 12, True, id="n1"))
    state.add_alert(alert(1, "ETH"))
    state.add_alert(alert(1))
    everything = state.snapshot()
    assert everything["asset"] is None
    assert everything["totals"]["classified"] == 4
    assert [a["alert_id"] for a in everything["alerts"]] == ["a1", "a1ETH"]
    assert everything["thresholds"] == {"low": 0.3, "high": 0.7}
    # Primary attribution: e1 counts for ETH only.
    assert [(a["asset"], a["classified"]) for a in everything["assets"]] == [("ETH", 2), ("BTC", 1)]
    eth = state.snapshot("ETH")
    assert eth["asset"] == "ETH"
    assert (eth["series"]["t"], eth["series"]["ratio"]) == ([T0, T0 + 10], [1.0, 1.0])
    assert [t["id"] for t in eth["tweets"]] == ["e2", "e1"]
    assert eth["tweets"][1]["assets"] == ["ETH", "BTC"]
    assert [a["alert_id"] for a in eth["alerts"]] == ["a1ETH"]
    assert eth["thresholds"] == {"low": 0.2, "high": 0.8}
    btc = state.snapshot("BTC")
    assert (btc["totals"]["classified"], btc["totals"]["bullish_ratio"]) == (1, 0.0)
    assert btc["alerts"] == []
    unknown = state.snapshot("SOL")
    assert (unknown["totals"]["records"], unknown["series"]["t"]) == (0, [])


def test_every_attribution_and_the_bounded_asset_views() -> None:
    state = DashboardState(attribution="every", max_assets=2)
    state.add_record(rec(T0, True, assets=("ETH", "BTC")))
    assert state.assets == ["ETH", "BTC"]
    state.add_record(rec(T0 + 1, True, assets=("ETH",)))  # ETH is now the most recent
    state.add_record(rec(T0 + 2, True, assets=("SOL",)))  # BTC, least recently active, goes
    assert state.assets == ["ETH", "SOL"]
    assert state.snapshot("BTC")["totals"]["records"] == 0
    assert state.snapshot("ETH")["totals"]["records"] == 2


def test_routes_select_an_asset() -> None:
    state = DashboardState()
    state.add_record(rec(T0, True, id="e", assets=("ETH",)))
    state.add_record(rec(T0, True, id="b", assets=("BTC",)))
    stopping = threading.Event()
    app = create_app(state, None, push_interval_s=0.05, stopping=stopping)
    with TestClient(app) as client:
        assert [t["id"] for t in client.get("/api/snapshot?asset=BTC").json()["tweets"]] == ["b"]
        assert client.get("/api/snapshot?asset=<script>").status_code == 400
        assert client.get("/events?asset=eth%20x").status_code == 400
        with client.stream("GET", "/events?asset=ETH") as events:
            data = next(line for line in events.iter_lines() if line.startswith("data:"))
            snap = json.loads(data[len("data:") :])
            assert (snap["asset"], [t["id"] for t in snap["tweets"]]) == ("ETH", ["e"])
            stopping.set()


def test_feed_counts_a_fanned_out_input_once() -> None:
    from ops.settings import DashboardSettings, KafkaSettings, TopicsSettings
    from stream.apps.dashboard.feed import DashboardFeed

    state = DashboardState(attribution="every")
    feed = DashboardFeed(
        DashboardSettings(), KafkaSettings(), TopicsSettings(output="out", alerts="al"), state
    )
    value = rec(T0, True, id="t1", assets=("ETH", "BTC")).model_dump_json().encode()
    for key in (b"ETH", b"BTC"):
        feed._handle("out", value, key)
    assert state.records == 1
    assert [state.snapshot(a)["totals"]["records"] for a in ("ETH", "BTC")] == [1, 1]
