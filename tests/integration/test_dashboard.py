"""The dashboard's Kafka feed and HTTP API on the embedded broker, with synthetic records (the
browser test drives the page itself)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from ops.settings import KafkaSettings, Settings
from schemas.alerts import AlertDirection, AlertKind
from stream.apps.dashboard import Dashboard
from stream.core.rules import Decision, build_alert
from stream.core.windows import WindowStats
from tests.integration.synthetic import produce, produce_raw, record, wait_until

pytestmark = pytest.mark.integration


def test_dashboard_serves_records_and_alerts_from_kafka(
    kafka_settings: KafkaSettings, make_topic: Callable[..., str]
) -> None:
    out, alerts = make_topic("out", 2), make_topic("alerts")
    settings = Settings(
        _env_file=None,
        kafka=kafka_settings,
        topics={"output": out, "alerts": alerts},
        dashboard={"port": 0, "bucket_s": 1, "push_interval_s": 0.1, "recent": 5},
    )
    now = time.time()
    # Written before the dashboard starts: read back from the look-back.
    produce(kafka_settings, out, [record(now, True, id=f"early-{i}") for i in range(3)])
    with Dashboard(settings.dashboard, settings.kafka, settings.topics, settings.alerts) as dash:
        assert dash.url.startswith("http://127.0.0.1:")

        def snapshot() -> dict[str, Any]:
            response = httpx.get(dash.url + "api/snapshot", timeout=5)
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body

        produce(kafka_settings, out, [record(now, i % 2 == 0, id=f"live-{i}") for i in range(6)])
        produce(kafka_settings, out, [record(now, None, id="skipped")])
        window = WindowStats(60, int(now) // 60 * 60, classified=20, positive=18)
        alert = build_alert(
            Decision(AlertKind.THRESHOLD_CROSSED, AlertDirection.UP, window, 0.9, 0.7),
            emitted_at=datetime.now(tz=UTC),
        )
        # Published twice, as at-least-once delivery may: shown once.
        produce_raw(kafka_settings, alerts, [(alert.alert_id, alert.model_dump_json())] * 2)
        produce_raw(kafka_settings, alerts, [("junk", "{not json")])
        wait_until(lambda: snapshot()["totals"]["records"] == 10, 20, "all ten records")
        wait_until(lambda: snapshot()["totals"]["invalid"] == 1, 10, "the junk alert")
        snap = snapshot()
        assert snap["totals"]["classified"] == 9
        assert snap["totals"]["skipped"] == 1
        assert snap["totals"]["positive"] == 6
        assert len(snap["tweets"]) == 5
        assert {t["id"] for t in snap["tweets"]} <= {f"live-{i}" for i in range(6)} | {
            f"early-{i}" for i in range(3)
        }
        assert [a["alert_id"] for a in snap["alerts"]] == [alert.alert_id]
        assert sum(snap["series"]["volume"]) == 9
        health = httpx.get(dash.url + "healthz", timeout=5)
        assert health.status_code == 200
        assert health.json()["feed"]["alive"] is True
        with httpx.stream("GET", dash.url + "events", timeout=5) as events:
            first = next(line for line in events.iter_lines() if line.startswith("data:"))
            assert '"records": 10' in first
    assert not dash.running
