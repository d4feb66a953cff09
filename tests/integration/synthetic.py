"""Synthetic SentimentOut streams for the downstream subscribers' tests (alerts, dashboard), and
small Kafka helpers: produce, read a topic to its end, wait on a condition."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from ops.kafka import consumer_config, producer_config
from ops.settings import KafkaSettings
from schemas.messages import Label, SentimentOut, SkipReason, SourceRef, Status

# 2026-01-01T00:00:00Z: a multiple of every window length the tests use.
T0 = 1_767_225_600


def record(
    event_time: float,
    positive: bool | None,
    *,
    id: str | None = None,
    p_positive: float | None = None,
    text: str | None = None,
) -> SentimentOut:
    """A classified record (positive True/False) or, with positive=None, a skipped one."""
    rid = id or uuid.uuid4().hex[:12]
    when = datetime.fromtimestamp(event_time, tz=UTC)
    common = {
        "id": rid,
        "model_version": "synthetic",
        "source": SourceRef(topic="synthetic", partition=0, offset=0),
        "event_time": when,
        "processed_time": datetime.now(tz=UTC),
        "text": text,
    }
    if positive is None:
        return SentimentOut(
            status=Status.SKIPPED,
            skip_reason=SkipReason.NON_ENGLISH,
            **common,
        )
    p = p_positive if p_positive is not None else (0.9 if positive else 0.1)
    return SentimentOut(
        status=Status.CLASSIFIED,
        label=Label.POSITIVE if positive else Label.NEGATIVE,
        p_positive=p,
        p_negative=1.0 - p,
        **common,
    )


def window_records(
    start: float, n: int, positive: int, spread_s: float = 50.0
) -> list[SentimentOut]:
    """`n` classified records spread over [start, start + spread_s), `positive` of them bullish."""
    step = spread_s / max(n, 1)
    return [record(start + 1 + i * step, i < positive) for i in range(n)]


def produce(
    kafka: KafkaSettings,
    topic: str,
    records: Iterable[SentimentOut],
    *,
    partition: int | None = None,
) -> int:
    producer = Producer(producer_config(kafka))
    n = 0
    for rec in records:
        key, value = rec.id.encode(), rec.model_dump_json().encode()
        if partition is None:
            producer.produce(topic, key=key, value=value)
        else:
            producer.produce(topic, key=key, value=value, partition=partition)
        n += 1
    left = producer.flush(15)
    assert left == 0, f"{left} records not delivered"
    return n


def produce_raw(kafka: KafkaSettings, topic: str, pairs: Iterable[tuple[str, str]]) -> None:
    """(key, JSON value) pairs, as another service would publish them."""
    producer = Producer(producer_config(kafka))
    for key, value in pairs:
        producer.produce(topic, key=key.encode(), value=value.encode())
    assert producer.flush(15) == 0


def read_all(kafka: KafkaSettings, topic: str, timeout: float = 20.0) -> list[bytes]:
    """Every value on the topic, read until each partition reports its end (EOF events, not high
    watermarks, which Tansu reports wrong)."""
    consumer = Consumer(
        consumer_config(kafka, f"reader-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True})
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        remaining = set(partitions)
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        while remaining:
            assert time.monotonic() < deadline, f"{topic}: no end of partition(s) {remaining}"
            for msg in consumer.consume(100, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(msg.partition())
                    continue
                value = msg.value()
                assert value is not None
                values.append(value)
        return values
    finally:
        consumer.close()


def wait_until(
    condition: Callable[[], object], timeout: float = 30.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)
