"""Partition ownership: the assigned set, the paused set, per-partition positions, and the
consumer group's rebalance callbacks.

Revoked partitions are released (the worker finishes the in-flight batches, which may hold their
inputs, and the delivery guarantee commits what was delivered) before the callback returns. Lost
partitions may already belong to another member: nothing is committed for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import TopicPartition

from ops.kafka import ConsumerClient
from ops.logging import get_logger
from stream.core import TopicPartitionKey
from stream.serve.health import Health

log = get_logger("stream.serve")


def tp_str(tps: Iterable[TopicPartitionKey]) -> list[str]:
    return sorted(f"{t}[{p}]" for t, p in tps)


class Partitions:
    """What this worker owns, and the rebalance callbacks that change it.

    `release(tps, lost)` is the worker's: it runs inside the revoke/lost callback, before the
    partitions are forgotten."""

    def __init__(
        self, health: Health, release: Callable[[set[TopicPartitionKey], bool], None]
    ) -> None:
        self.health = health
        self._release = release
        # Rebound, never mutated: other threads (readiness, tests) read it without a lock.
        self.assigned: frozenset[TopicPartitionKey] = frozenset()
        self.paused: set[TopicPartitionKey] = set()
        # Next offset to consume per owned partition (for the lag gauge).
        self.position: dict[TopicPartitionKey, int] = {}
        self.assigned_at: float | None = None

    def on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        self.assigned = self.assigned | tps
        self.assigned_at = time.monotonic()
        self.health.broker_seen()  # an assignment is an answer from the coordinator
        self._changed("assign")
        log.info("rebalance", kind="assign", partitions=tp_str(tps), assigned=len(self.assigned))

    def on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        self._changed("revoke")
        log.info("rebalance", kind="revoke", partitions=tp_str(tps), closing=self.health.closing)
        try:
            if tps:
                self._release(tps, False)
        finally:
            self.forget(tps)

    def on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        self._changed("lost")
        log.warning("rebalance", kind="lost", partitions=tp_str(tps))
        try:
            if tps:
                self._release(tps, True)
        finally:
            self.forget(tps)

    def _changed(self, kind: str) -> None:
        self.health.counters.rebalances += 1
        self.health.metrics.rebalances.labels(kind).inc()
        self.health.assigned_count = len(self.assigned)
        self.health.metrics.assigned.set(len(self.assigned))

    def forget(self, tps: set[TopicPartitionKey]) -> None:
        self.assigned = self.assigned - tps
        self.paused -= tps
        for tp in tps:
            self.position.pop(tp, None)
        self.health.forget_lag(tps)
        self.health.assigned_count = len(self.assigned)
        self.health.metrics.assigned.set(len(self.assigned))

    # Back-pressure: while the forming micro-batch is full, every owned partition is paused (and
    # still polled, so the group session stays alive).

    def pause_all(self, consumer: ConsumerClient) -> None:
        todo = self.assigned - self.paused
        if todo:
            consumer.pause([TopicPartition(t, p) for t, p in todo])
            self.paused |= todo

    def update_pause(self, consumer: ConsumerClient, full: bool) -> None:
        if full:
            self.pause_all(consumer)
        elif self.paused:
            live = self.paused & self.assigned
            if live:
                consumer.resume([TopicPartition(t, p) for t, p in live])
            self.paused.clear()
