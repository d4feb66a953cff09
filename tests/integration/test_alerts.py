"""`cryptosent alerts` against the embedded broker, fed with synthetic SentimentOut streams."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from ops.settings import AlertsSettings, KafkaSettings, Settings, TopicsSettings
from schemas.alerts import Alert, AlertDirection, AlertKind
from stream.apps.alerts import AlertsService
from stream.core.rules import alert_id
from stream.core.windows import WindowStats
from tests.integration.synthetic import T0, produce, read_all, record, wait_until, window_records

pytestmark = pytest.mark.integration

W = 60


def make_settings(kafka: KafkaSettings, output: str, alerts: str, **overrides: Any) -> Settings:
    rules: dict[str, Any] = {
        "group_id": f"alerts-{uuid.uuid4().hex[:8]}",
        "windows_s": [W],
        "allowed_lateness_s": 30,
        "min_volume": 5,
        "trailing_windows": 10,
        "min_trailing_windows": 5,
        "zscore_k": 50.0,  # these tests are about the threshold rule; z-scores have unit tests
        "volume_spike_factor": 10.0,
        "session_timeout_ms": 6000,
        "commit_interval_s": 0.5,
    }
    rules.update(overrides)
    return Settings(
        _env_file=None,
        kafka=kafka,
        topics=TopicsSettings(output=output, alerts=alerts),
        alerts=AlertsSettings(**rules),
    )


class Running:
    def __init__(self, service: AlertsService, thread: threading.Thread) -> None:
        self.service = service
        self.thread = thread
        self.windows: list[WindowStats] = []


@contextmanager
def running(settings: Settings) -> Iterator[Running]:
    stop = threading.Event()
    service = AlertsService(settings.alerts, settings.kafka, settings.topics)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            service.run(stop)
        except BaseException as exc:
            errors.append(exc)
            raise

    thread = threading.Thread(target=target, name="alerts", daemon=True)
    handle = Running(service, thread)
    service.on_window = handle.windows.append
    thread.start()
    try:
        wait_until(service.assigned.is_set, 30, "the alerts consumer's partition assignment")
        yield handle
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the alerts service did not stop"
    assert not errors, errors


def alerts_on(kafka: KafkaSettings, topic: str) -> list[Alert]:
    return [Alert.model_validate_json(v) for v in read_all(kafka, topic)]


def closed_until(run: Running, end: int) -> Callable[[], bool]:
    return lambda: any(w.end >= end for w in run.windows)


def crossing_stream() -> list[Any]:
    """Windows 0-2 neutral (0.5), 3-5 bullish (0.9), then one record in window 8 whose watermark
    (with 30 s lateness) closes windows up to 7."""
    recs = []
    for i in range(3):
        recs += window_records(T0 + i * W, 10, 5)
    for i in range(3, 6):
        recs += window_records(T0 + i * W, 10, 9)
    recs.append(record(T0 + 8 * W + 45, True))
    return recs


def test_threshold_crossing_fires_exactly_one_alert(
    kafka_settings: KafkaSettings, make_topic: Callable[..., str]
) -> None:
    output, alerts = make_topic("out", 2), make_topic("alerts", 1)
    settings = make_settings(kafka_settings, output, alerts)
    with running(settings) as run:
        recs = crossing_stream()
        produce(kafka_settings, output, recs[:-1], partition=0)
        produce(kafka_settings, output, recs[-1:], partition=1)
        wait_until(closed_until(run, T0 + 8 * W), 30, "window 7 to close")
        wait_until(lambda: run.service.stats.fired >= 1, 10, "the alert")
    published = alerts_on(kafka_settings, alerts)
    assert len(published) == 1, [a.message for a in published]
    [alert] = published
    assert alert.kind is AlertKind.THRESHOLD_CROSSED
    assert alert.direction is AlertDirection.UP
    assert alert.window_start.timestamp() == T0 + 3 * W
    assert alert.bullish_ratio == pytest.approx(0.9)
    assert alert.alert_id == alert_id(AlertKind.THRESHOLD_CROSSED, W, T0 + 3 * W)


def test_flat_stream_fires_nothing(
    kafka_settings: KafkaSettings, make_topic: Callable[..., str]
) -> None:
    output, alerts = make_topic("out", 1), make_topic("alerts", 1)
    settings = make_settings(kafka_settings, output, alerts, zscore_k=3.0, volume_spike_factor=3.0)
    with running(settings) as run:
        recs = [r for i in range(12) for r in window_records(T0 + i * W, 10, 5)]
        recs.append(record(T0 + 13 * W + 45, False))
        produce(kafka_settings, output, recs)
        wait_until(closed_until(run, T0 + 12 * W), 30, "window 11 to close")
        assert [w.classified for w in run.windows[:12]] == [10] * 12
        assert run.service.stats.fired == 0
    assert alerts_on(kafka_settings, alerts) == []


def test_out_of_order_record_lands_in_its_window_and_too_late_one_is_dropped(
    kafka_settings: KafkaSettings, make_topic: Callable[..., str]
) -> None:
    output, alerts = make_topic("out", 1), make_topic("alerts", 1)
    settings = make_settings(kafka_settings, output, alerts)
    recs = window_records(T0, 10, 5)  # window 0: 0.5
    recs += window_records(T0 + W, 9, 6)  # window 1 so far: 6/9 = 0.67, under 0.7
    recs.append(record(T0 + 2 * W + 5, False))  # watermark T0 + 95: window 1 still open
    # Out of order, within the lateness: it belongs to window 1 and lifts it to 7/10 = 0.7.
    recs.append(record(T0 + W + 40, True, id="out-of-order"))
    recs.append(record(T0 + 4 * W + 40, False))  # watermark T0 + 250 closes windows 0-2
    recs.append(record(T0 + W + 41, True, id="too-late"))  # window 1 is closed by now
    with running(settings) as run:
        produce(kafka_settings, output, recs)
        wait_until(closed_until(run, T0 + 3 * W), 30, "window 2 to close")
        wait_until(lambda: run.service.stats.dropped_late >= 1, 10, "the late record")
        by_start = {w.start: w for w in run.windows}
        assert (by_start[T0 + W].classified, by_start[T0 + W].positive) == (10, 7)
        assert by_start[T0 + 2 * W].classified == 1
        assert run.service.stats.dropped_late == 1
        wait_until(lambda: run.service.stats.fired >= 1, 10, "the alert")
    [alert] = alerts_on(kafka_settings, alerts)
    assert alert.window_start.timestamp() == T0 + W
    assert alert.kind is AlertKind.THRESHOLD_CROSSED


def test_restart_does_not_refire_old_alerts(
    kafka_settings: KafkaSettings, make_topic: Callable[..., str]
) -> None:
    output, alerts = make_topic("out", 2), make_topic("alerts", 1)
    settings = make_settings(kafka_settings, output, alerts)
    first = crossing_stream()
    with running(settings) as run:
        # Windows 0-2 and the watermark-pushing record on one partition, the crossing on the
        # other, so the replay has to line two partitions up at their committed offsets. (In
        # event-time order: a caught-up consumer would rightly call a record late that arrives
        # after one from far later.)
        produce(kafka_settings, output, first[:30], partition=0)
        produce(kafka_settings, output, first[30:-1], partition=1)
        produce(kafka_settings, output, first[-1:], partition=0)
        wait_until(closed_until(run, T0 + 8 * W), 30, "window 7 to close")
        wait_until(lambda: run.service.stats.fired == 1, 10, "the first alert")
    [up] = alerts_on(kafka_settings, alerts)

    # While it is down the stream stays bullish (no new crossing), then turns bearish (one new
    # crossing). Same group on restart: the windows up to the committed offsets are replayed
    # silently, partition 0's backlog after its committed offset is held until partition 1 is
    # replayed too, then judged live.
    more = []
    for i in range(9, 12):
        more += window_records(T0 + i * W, 10, 9)
    for i in range(12, 14):
        more += window_records(T0 + i * W, 10, 1)
    more.append(record(T0 + 16 * W + 45, True))
    produce(kafka_settings, output, more, partition=0)
    with running(settings) as run:
        wait_until(closed_until(run, T0 + 16 * W), 30, "window 15 to close")
        wait_until(lambda: run.service.stats.fired >= 1, 10, "the new alert")
        stats = run.service.stats
        # The old crossing was re-derived during the replay and held back there.
        assert (stats.suppressed_replay, stats.suppressed_duplicate) == (1, 0)
        assert stats.fired == 1
    published = alerts_on(kafka_settings, alerts)
    assert [a.alert_id for a in published][:1] == [up.alert_id]
    assert [(a.kind, a.direction, a.window_start.timestamp()) for a in published[1:]] == [
        (AlertKind.THRESHOLD_CROSSED, AlertDirection.DOWN, T0 + 12 * W)
    ]

    # A fresh group has no committed offsets, so nothing is replayed silently: every window is
    # judged again, and the ids already on the alerts topic are what stops the re-publication.
    fresh = settings.model_copy(deep=True)
    fresh.alerts.group_id = f"alerts-{uuid.uuid4().hex[:8]}"
    with running(fresh) as run:
        wait_until(closed_until(run, T0 + 16 * W), 30, "the rebuild")
        wait_until(lambda: run.service.stats.suppressed_duplicate >= 2, 10, "both duplicates")
        assert run.service.stats.fired == 0
    assert len(alerts_on(kafka_settings, alerts)) == 2


def test_metrics_and_readiness_on_the_shared_http_server(
    kafka_settings: KafkaSettings, make_topic: Callable[..., str]
) -> None:
    output, alerts = make_topic("out", 2), make_topic("alerts", 1)
    settings = make_settings(
        kafka_settings, output, alerts, metrics_host="127.0.0.1", metrics_port=0
    )
    with running(settings) as run:
        server = run.service.http
        assert server is not None
        base = f"http://127.0.0.1:{server.port}"
        # Both partitions are empty: each reports its end at once, so the look-back is read.
        wait_until(lambda: httpx.get(base + "/readyz", timeout=5).status_code == 200, 20, "ready")
        ready = httpx.get(base + "/readyz", timeout=5).json()
        assert ready == {"ready": True, "assigned": [0, 1], "replaying": False, "behind": []}
        assert httpx.get(base + "/healthz", timeout=5).status_code == 200
        produce(kafka_settings, output, window_records(T0, 10, 5))
        wait_until(lambda: run.service.stats.counted == 10, 20, "the records")
        metrics = httpx.get(base + "/metrics", timeout=5).text
        assert 'cryptosent_alerts_records_total{outcome="counted"} 10.0' in metrics
        assert "cryptosent_alerts_known_ids 0.0" in metrics
    assert run.service.http is None
