"""The parts `StreamWorker` composes, with fake clients (no broker): BufferError back-pressure,
the too-large swap, at-least-once retries and commits, pausing, and the one dead-letter log."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from ops.kafka import produce
from ops.settings import InputFormat
from stream.core import Outcome, OutRecord, decode_message, to_out_record
from stream.core.steps import Batch
from stream.serve.delivery import MAX_DELIVERY_ATTEMPTS, AtLeastOnce, Producing, StreamError
from stream.serve.health import BROKER_FRESH_S, Health
from stream.serve.metrics import StreamMetrics
from stream.serve.rebalance import Partitions
from tests.unit.test_stream_core import FakeMessage

NOW = datetime(2024, 1, 1, tzinfo=UTC)


class FakeProducer:
    """Queues records; `poll` delivers them (or fails the first `fail` deliveries)."""

    def __init__(self, *, buffer_errors: int = 0, max_bytes: int = 10_000, fail: int = 0) -> None:
        self.buffer_errors = buffer_errors
        self.max_bytes = max_bytes
        self.fail = fail
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.polls = 0
        self._pending: list[Callable[[Any, Any], None]] = []

    def produce(self, topic: str, value: bytes, *, key: bytes | None, on_delivery: Any) -> None:
        if self.buffer_errors:
            self.buffer_errors -= 1
            raise BufferError("queue full")
        if len(value) > self.max_bytes:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.sent.append((topic, value, key))
        if on_delivery is not None:
            self._pending.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        self.polls += 1
        pending, self._pending = self._pending, []
        for callback in pending:
            if self.fail:
                self.fail -= 1
                callback(KafkaError(KafkaError._MSG_TIMED_OUT), None)
            else:
                callback(None, None)
        return len(pending)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return len(self._pending)


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[tuple[str, int], int]] = []
        self.paused: set[tuple[str, int]] = set()

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool = True) -> Any:
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})
        return None if asynchronous else []

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}


def _inbound(offset: int, value: bytes) -> Any:
    msg = FakeMessage(value, _offset=offset)
    return decode_message(msg, InputFormat(), 10_000, NOW, timestamp_ms=None)  # type: ignore[arg-type]


def _record(offset: int, text: str = "eth up") -> OutRecord:
    from schemas.messages import Label, SentimentOut, Status

    item = _inbound(offset, json.dumps({"id": f"t{offset}", "text": text}).encode())
    out = SentimentOut(
        id=f"t{offset}",
        status=Status.CLASSIFIED,
        label=Label.POSITIVE,
        p_positive=0.9,
        p_negative=0.1,
        model_version="m",
        source=item.source,
        processed_time=NOW,
        text=text,
    )
    return to_out_record(item, out, "out")


def _alo(producer: FakeProducer, consumer: FakeConsumer) -> AtLeastOnce:
    health = Health(StreamMetrics(), "m")
    return AtLeastOnce(
        producer,  # type: ignore[arg-type]
        consumer,  # type: ignore[arg-type]
        health,
        dead_letter_topic="dlq",
        commit_interval_s=0.0,
    )


def test_produce_waits_out_a_full_queue() -> None:
    producer = FakeProducer(buffer_errors=2)
    produce(producer, "out", b"v", b"k")  # type: ignore[arg-type]
    assert producer.sent == [("out", b"v", b"k")]
    assert producer.polls == 2


def test_an_output_too_large_is_swapped_for_its_dead_letter() -> None:
    producer = FakeProducer(max_bytes=1000)
    big = _record(4, "eth " * 400)
    sent = Producing(producer, "dlq").send(big)  # type: ignore[arg-type]
    assert (sent.topic, sent.outcome, sent.source) == ("dlq", Outcome.TOO_LARGE, big.source)
    assert [topic for topic, _, _ in producer.sent] == ["dlq"]
    assert json.loads(producer.sent[0][1])["error_kind"] == "oversized"


def test_at_least_once_commits_only_acknowledged_inputs_and_retries_failures() -> None:
    producer, consumer = FakeProducer(fail=1), FakeConsumer()
    alo = _alo(producer, consumer)
    records = [_record(i) for i in range(3)]
    for r in records:
        alo.consumed(_inbound(r.source.offset, b"{}"))
    alo.publish(Batch(seq=1, items=[]), records)
    alo.service(commit=True)  # offset 0's delivery fails (retried), 1 and 2 are acknowledged
    assert consumer.commits == []  # nothing contiguous from the start yet
    alo.service(commit=True)  # the retry is delivered
    assert consumer.commits[-1] == {("tweets", 0): 3}
    assert alo.health.counters.delivery_errors == 1
    assert alo.health.counters.outputs_acked == 3


def test_at_least_once_gives_up_after_the_last_attempt() -> None:
    producer, consumer = FakeProducer(fail=MAX_DELIVERY_ATTEMPTS), FakeConsumer()
    alo = _alo(producer, consumer)
    alo.consumed(_inbound(0, b"{}"))
    alo.publish(Batch(seq=1, items=[]), [_record(0)])
    for _ in range(MAX_DELIVERY_ATTEMPTS - 1):
        alo.service(commit=False)  # a failed delivery, produced again
    with pytest.raises(StreamError, match=f"after {MAX_DELIVERY_ATTEMPTS} attempts"):
        alo.service(commit=False)
    assert consumer.commits == []


def test_pause_when_full_resume_when_not() -> None:
    health = Health(StreamMetrics(), "m")
    parts = Partitions(health, lambda tps, lost: None)
    parts.on_assign(None, [TopicPartition("t", 0), TopicPartition("t", 1)])
    consumer = FakeConsumer()
    parts.update_pause(consumer, full=True)  # type: ignore[arg-type]
    assert consumer.paused == {("t", 0), ("t", 1)}
    parts.update_pause(consumer, full=False)  # type: ignore[arg-type]
    assert consumer.paused == set()
    released: list[tuple[set[tuple[str, int]], bool]] = []
    parts = Partitions(health, lambda tps, lost: released.append((tps, lost)))
    parts.on_assign(None, [TopicPartition("t", 0)])
    parts.on_lost(None, [TopicPartition("t", 0)])
    assert released == [({("t", 0)}, True)]
    assert parts.assigned == frozenset()
    assert health.readiness()[0] is False


def test_every_dead_letter_is_logged_once_where_it_is_counted() -> None:
    health = Health(StreamMetrics(), "m")
    bad = _inbound(9, b"{not json")
    assert bad.dead_letter is not None
    letter = to_out_record(bad, bad.dead_letter, "dlq")
    too_large = Producing(FakeProducer(max_bytes=1000), "dlq").send(_record(3, "eth " * 400))  # type: ignore[arg-type]
    with structlog.testing.capture_logs() as logs:
        health.outcomes([_record(1), letter, too_large])
    lines = [e for e in logs if e["event"] == "dead_letter"]
    assert [(e["kind"], e["outcome"], e["offset"]) for e in lines] == [
        ("invalid_json", "dead_letter", 9),
        ("oversized", "too_large", 3),
    ]
    assert "invalid JSON" in lines[0]["reason"]
    assert (health.counters.classified, health.counters.dead_lettered) == (1, 2)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _stats(state: str, rtt_cnt: int) -> str:
    broker = {"name": "b:9092/1", "nodeid": 1, "state": state, "rtt": {"cnt": rtt_cnt}}
    return json.dumps({"brokers": {"b:9092/1": broker}})


def _ready_health(clock: FakeClock) -> Health:
    health = Health(StreamMetrics(), "m", clock=clock)
    Partitions(health, lambda tps, lost: None).on_assign(None, [TopicPartition("t", 0)])
    return health


def test_readyz_follows_broker_round_trips_not_connection_state() -> None:
    """A SIGSTOPed broker keeps its connections UP: only answered requests count."""
    clock = FakeClock()
    health = _ready_health(clock)
    assert health.readiness()[0] is True  # the assignment was an answer
    clock.now += 2.0
    health.on_stats(_stats("UP", rtt_cnt=12))
    assert health.readiness()[0] is True
    # The hang: stats keep coming, state UP, but no request is answered.
    for _ in range(int(BROKER_FRESH_S) + 1):
        clock.now += 1.0
        health.on_stats(_stats("UP", rtt_cnt=0))
    ready, detail = health.readiness()
    assert ready is False
    assert detail["broker_seen_s_ago"] >= BROKER_FRESH_S
    # SIGCONT: the next report with an answered request makes it ready again.
    clock.now += 1.0
    with structlog.testing.capture_logs() as logs:
        health.on_stats(_stats("UP", rtt_cnt=3))
    assert health.readiness()[0] is True
    assert [e["event"] for e in logs] == ["broker_reachable"]


def test_all_brokers_down_is_not_ready_at_once_until_the_next_round_trip() -> None:
    clock = FakeClock()
    health = _ready_health(clock)
    health.on_stats(_stats("UP", rtt_cnt=1))
    with structlog.testing.capture_logs():
        health.on_client_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    assert health.readiness()[0] is False
    clock.now += 0.5
    with structlog.testing.capture_logs():
        health.committed()
    assert health.readiness()[0] is True


def test_client_errors_are_one_line_per_kind_per_interval_with_a_count() -> None:
    clock = FakeClock()
    health = Health(StreamMetrics(), "m", clock=clock, client_error_interval_s=30.0)
    transport, down = KafkaError(KafkaError._TRANSPORT), KafkaError(KafkaError._ALL_BROKERS_DOWN)
    with structlog.testing.capture_logs() as logs:
        for _ in range(100):  # 10 s of a broker away: errors every 100 ms
            health.on_client_error(transport)
            health.on_client_error(down)
            clock.now += 0.1
        clock.now += 21.0
        health.on_client_error(transport)
    lines = [
        (e["error"], e["not_logged_since"]) for e in logs if e["event"] == "kafka_client_error"
    ]
    assert len(lines) == 3
    assert [n for _, n in lines[:2]] == [0, 0]
    assert lines[2][1] == 99  # the transport errors held back since the first line
    with structlog.testing.capture_logs() as logs:
        health.on_stats(_stats("UP", rtt_cnt=1))
    assert logs[0]["event"] == "broker_reachable"
    assert logs[0]["kafka_client_errors_not_logged"] == {"_ALL_BROKERS_DOWN": 99}
