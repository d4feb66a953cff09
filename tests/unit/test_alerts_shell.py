"""The Kafka shell of `cryptosent alerts` with fakes for the consumer's messages and the
producer: start offsets, the silent replay and its held records, readiness, and the bounded
memory of published ids."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import OFFSET_END, TIMESTAMP_CREATE_TIME, KafkaError
from prometheus_client import CollectorRegistry

from ops.settings import AlertsSettings
from schemas.alerts import AlertDirection, AlertKind
from schemas.messages import Label, SentimentOut, SourceRef, Status
from stream.apps.alerts.assignment import Assignment
from stream.apps.alerts.metrics import RECENT_FIRED_IDS, AlertsMetrics, AlertsStats
from stream.apps.alerts.publisher import AlertPublisher
from stream.apps.alerts.service import plan_starts
from stream.core.rules import Decision, SeenAlerts, build_alert
from stream.core.windows import WindowStats

T0 = 1_767_225_600
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Msg:
    """The accessors of a confluent-kafka Message that the shell uses."""

    p: int
    off: int = 0
    body: bytes | None = None
    err: KafkaError | None = None
    ts_ms: int = T0 * 1000
    k: bytes | None = None

    def error(self) -> KafkaError | None:
        return self.err

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.off

    def value(self) -> bytes | None:
        return self.body

    def key(self) -> bytes | None:
        return self.k

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, self.ts_ms


def eof(p: int) -> Msg:
    return Msg(p, err=KafkaError(KafkaError._PARTITION_EOF))


def out(p: int, off: int, t: float, positive: bool = True) -> Msg:
    rec = SentimentOut(
        id=f"{p}-{off}",
        status=Status.CLASSIFIED,
        label=Label.POSITIVE if positive else Label.NEGATIVE,
        p_positive=0.9 if positive else 0.1,
        p_negative=0.1 if positive else 0.9,
        model_version="m",
        source=SourceRef(topic="in", partition=p, offset=off),
        event_time=datetime.fromtimestamp(t, tz=UTC),
        processed_time=NOW,
    )
    return Msg(p, off, rec.model_dump_json().encode())


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.callbacks: list[Any] = []
        self.fail_with: str | None = None

    def produce(self, topic: str, *, key: bytes, value: bytes, on_delivery: Any) -> None:
        self.sent.append((topic, key, value))
        self.callbacks.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        n = len(self.callbacks)
        for cb in self.callbacks:
            cb(self.fail_with, None)
        self.callbacks.clear()
        return n

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0


def publisher(stats: AlertsStats, producer: FakeProducer | None = None) -> AlertPublisher:
    metrics = AlertsMetrics(CollectorRegistry())
    return AlertPublisher(producer or FakeProducer(), "alerts", stats, metrics)  # type: ignore[arg-type]


class Calls:
    def __init__(self) -> None:
        self.paused: list[list[int]] = []
        self.resumed: list[list[int]] = []


def assignment(
    partitions: list[int], replay_end: dict[int, int], stats: AlertsStats, calls: Calls
) -> Assignment:
    cfg = AlertsSettings(windows_s=[60], allowed_lateness_s=0, min_volume=1)
    return Assignment(
        cfg,
        partitions,
        replay_end,
        cutoff_ms=0,
        publisher=publisher(stats),
        stats=stats,
        metrics=AlertsMetrics(CollectorRegistry()),
        pause=calls.paused.append,
        resume=calls.resumed.append,
        clock=lambda: T0 + 3600.0,
    )


# -- start offsets ---------------------------------------------------------------------------


def test_plan_starts_replays_only_up_to_the_committed_offsets() -> None:
    starts, replay_end = plan_starts(
        range(5),
        committed={1: 10, 2: 2, 3: 7},
        lookback={0: 5, 1: 3, 2: 5, 3: -1, 4: -1},
    )
    # 0: fresh group, read the look-back live. 1: re-read 3..9 silently. 2: the committed
    # offset is before the look-back, start there (nothing to replay). 3: nothing after the
    # cut-off, continue where the group stopped. 4: nothing at all, only new records.
    assert starts == {0: 5, 1: 3, 2: 2, 3: 7, 4: OFFSET_END}
    assert replay_end == {1: 10}


# -- the silent replay, held records and readiness -------------------------------------------


def test_live_records_are_held_until_every_partition_is_replayed() -> None:
    stats, calls = AlertsStats(), Calls()
    a = assignment([0, 1], {0: 2}, stats, calls)
    assert stats.replaying
    assert a.behind == [0, 1]
    a.receive(out(1, 5, T0 + 1))  # partition 1 has nothing to replay: live, so held
    assert (stats.held_during_replay, stats.consumed, calls.paused) == (1, 0, [[1]])
    a.receive(out(0, 0, T0 + 2))
    assert stats.replaying
    a.receive(out(0, 1, T0 + 3))  # partition 0 reaches its committed offset: replay over
    assert not stats.replaying
    assert calls.resumed == [[1]]
    assert stats.consumed == 3  # the held record is counted once the replay is over
    assert a.positions == {0: 2, 1: 6}
    assert a.behind == [1]  # partition 1 has not read to its end yet
    a.receive(eof(1))
    assert a.behind == []


def test_windows_closed_during_the_replay_are_judged_silently() -> None:
    stats, calls = AlertsStats(), Calls()
    a = assignment([0], {0: 40}, stats, calls)
    producer = FakeProducer()
    a.publisher = publisher(stats, producer)
    offsets = iter(range(100))
    # Windows 0-1 neutral, 2 bullish (a crossing), all within the replay; then live: 3 neutral,
    # 4 bullish again (a second crossing), and one record in window 6 to close window 4.
    for w, pos in enumerate([5, 5, 9]):
        for i in range(10):
            a.receive(out(0, next(offsets), T0 + 60 * w + i, positive=i < pos))
    a.receive(out(0, next(offsets), T0 + 3 * 60 + 1))
    a.close_windows()
    assert stats.replaying
    for i in range(9):  # offsets 31..39: the replay ends with offset 39
        a.receive(out(0, next(offsets), T0 + 3 * 60 + 2 + i, positive=i % 2 == 0))
    assert not stats.replaying
    assert (stats.suppressed_replay, stats.fired) == (1, 0)
    for i in range(10):
        a.receive(out(0, next(offsets), T0 + 4 * 60 + i))
    a.receive(out(0, next(offsets), T0 + 6 * 60))
    a.after_batch()
    assert (stats.suppressed_replay, stats.fired) == (1, 1)
    [(topic, key, _value)] = producer.sent
    assert topic == "alerts"
    assert key.decode() == stats.fired_ids[-1]


def test_an_empty_partition_is_caught_up_at_its_end() -> None:
    stats, calls = AlertsStats(), Calls()
    a = assignment([0, 1], {}, stats, calls)
    assert not stats.replaying
    a.receive(eof(0))
    assert a.behind == [1]
    a.receive(eof(1))
    assert a.behind == []
    assert a.index.watermark.value is None


# -- bounded memory --------------------------------------------------------------------------


def alert_for(window_index: int) -> Any:
    w = WindowStats(60, T0 + 60 * window_index, classified=20, positive=18)
    decision = Decision(AlertKind.THRESHOLD_CROSSED, AlertDirection.UP, w, 0.9, 0.7)
    return build_alert(decision, NOW)


def test_published_ids_and_fired_ids_stay_bounded_on_a_long_run() -> None:
    stats = AlertsStats()
    producer = FakeProducer()
    pub = publisher(stats, producer)
    pub.reset(SeenAlerts(horizon_s=120))
    n = 3 * RECENT_FIRED_IDS
    for i in range(n):
        alert = alert_for(i)
        pub.emit(alert, replaying=False)
        pub.forget_before(alert.window_end.timestamp())
        assert len(pub.seen) <= 3  # the windows ending within 120 s of the watermark
    assert stats.fired == n
    assert len(stats.fired_ids) == RECENT_FIRED_IDS
    assert stats.fired_ids[-1] == alert_for(n - 1).alert_id
    assert stats.fired_ids[0] == alert_for(n - RECENT_FIRED_IDS).alert_id
    # A recent id is still known: its repeat is held back.
    pub.emit(alert_for(n - 1), replaying=False)
    assert (stats.fired, stats.suppressed_duplicate, len(producer.sent)) == (n, 1, n)


def test_a_failed_delivery_stops_the_service() -> None:
    stats = AlertsStats()
    producer = FakeProducer()
    pub = publisher(stats, producer)
    producer.fail_with = "broker down"
    pub.emit(alert_for(0), replaying=False)
    with pytest.raises(RuntimeError, match="broker down"):
        pub.poll()
    assert not pub.flush(1)
