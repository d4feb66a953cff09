"""ops.kafka.readback with a fake consumer: look-back offsets and their fallbacks, end-of-partition
events and the timestamp cut-off (the read-back itself runs against the broker in
tests/integration/test_alerts.py)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_NOT_AVAILABLE,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from ops.kafka.readback import before_cutoff, is_partition_eof, lookback_offsets


class FakeConsumer:
    def __init__(self, answer: list[TopicPartition] | Exception) -> None:
        self.answer = answer
        self.asked: list[TopicPartition] = []

    def offsets_for_times(self, query: list[TopicPartition], timeout: float) -> Any:
        self.asked = query
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def tps(n: int) -> list[TopicPartition]:
    return [TopicPartition("t", p) for p in range(n)]


def test_lookback_offsets_per_partition() -> None:
    answer = [
        TopicPartition("t", 0, 17),
        TopicPartition("t", 1, -1),  # nothing at or after the cut-off
    ]
    consumer = FakeConsumer(answer)
    assert lookback_offsets(consumer, tps(3), 1234, 5) == [17, -1, 0]  # type: ignore[arg-type]
    assert [(q.partition, q.offset) for q in consumer.asked] == [(0, 1234), (1, 1234), (2, 1234)]


def test_lookback_offsets_fall_back_to_the_beginning() -> None:
    failing = FakeConsumer(KafkaException(KafkaError(KafkaError._TIMED_OUT)))
    assert lookback_offsets(failing, tps(2), 0, 5) == [0, 0]  # type: ignore[arg-type]


class Stamped:
    def __init__(self, ts_type: int, ts_ms: int) -> None:
        self.ts = (ts_type, ts_ms)

    def timestamp(self) -> tuple[int, int]:
        return self.ts


def test_cutoff_and_end_of_partition() -> None:
    assert before_cutoff(Stamped(TIMESTAMP_CREATE_TIME, 999), 1000)  # type: ignore[arg-type]
    assert not before_cutoff(Stamped(TIMESTAMP_CREATE_TIME, 1000), 1000)  # type: ignore[arg-type]
    # Without a timestamp a record cannot be placed: it is kept, not dropped.
    assert not before_cutoff(Stamped(TIMESTAMP_NOT_AVAILABLE, -1), 1000)  # type: ignore[arg-type]
    assert is_partition_eof(KafkaError(KafkaError._PARTITION_EOF))
    assert not is_partition_eof(KafkaError(KafkaError._TIMED_OUT))
    assert not is_partition_eof(None)
