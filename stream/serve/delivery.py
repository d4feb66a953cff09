"""At-least-once delivery: every output (or dead letter) is produced with a delivery callback;
the `OffsetTracker` moves a partition's commit position only over inputs whose outputs, and all
earlier inputs' outputs, were acknowledged. Commits are explicit, every `commit_interval_ms`, on
revoke and at shutdown. A crash repeats work, never skips it.

`Producing` is the part both guarantees share: the producer, BufferError back-pressure, and the
swap of an output too large for the producer for a dead letter.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from ops.kafka import ConsumerClient, ProducerClient, is_too_large, produce
from ops.kafka.clients import DeliveryCallback
from ops.logging import get_logger
from stream.core import (
    Inbound,
    OffsetTracker,
    Outcome,
    OutRecord,
    TopicPartitionKey,
    too_large_record,
)
from stream.core.steps import Batch
from stream.serve.health import Health

log = get_logger("stream.serve")

MAX_DELIVERY_ATTEMPTS = 5


class StreamError(RuntimeError):
    """The worker cannot go on safely (broker refuses outputs, model broken): it stops without
    committing past what was delivered."""


def fmt_offsets(offsets: dict[TopicPartitionKey, int]) -> dict[str, int]:
    return {f"{t}[{p}]": o for (t, p), o in sorted(offsets.items())}


class Producing:
    def __init__(self, producer: ProducerClient, dead_letter_topic: str) -> None:
        self.producer = producer
        self.dead_letter_topic = dead_letter_topic

    def send(
        self,
        record: OutRecord,
        on_delivery: Callable[[OutRecord], DeliveryCallback] | None = None,
    ) -> OutRecord:
        """Produce one record; returns what was actually produced (a too-large output becomes
        its dead letter). `on_delivery(record)` gives the delivery callback for a record."""
        while True:
            callback = None if on_delivery is None else on_delivery(record)
            try:
                produce(self.producer, record.topic, record.value, record.key, callback)
                return record
            except KafkaException as exc:
                if not is_too_large(exc) or record.outcome is Outcome.TOO_LARGE:
                    raise
                # An input under max_message_bytes can still make an output over the producer's
                # message.max.bytes (escaping, a raised limit); it must not become a poison pill.
                record = too_large_record(record, self.dead_letter_topic)


class AtLeastOnce:
    """Delivery callbacks, retries and offset commits of the at-least-once guarantee."""

    transactional_id: str | None = None

    def __init__(
        self,
        producer: ProducerClient,
        consumer: ConsumerClient,
        health: Health,
        *,
        dead_letter_topic: str,
        commit_interval_s: float,
    ) -> None:
        self.out = Producing(producer, dead_letter_topic)
        self.consumer = consumer
        self.health = health
        self.tracker = OffsetTracker()
        self.commit_interval_s = commit_interval_s
        self._retry: list[tuple[OutRecord, int]] = []
        # Records not yet acknowledged per input, when an input has several (asset fan-out): its
        # offset is acknowledged only with its last record.
        self._unacked: dict[tuple[TopicPartitionKey, int], int] = {}
        self._fatal: BaseException | None = None
        self._last_commit_at = time.monotonic()

    @property
    def producer(self) -> ProducerClient:
        return self.out.producer

    def consumed(self, item: Inbound) -> None:
        self.tracker.track(item.tp, item.offset)

    def publish(self, batch: Batch, records: list[OutRecord]) -> list[OutRecord]:
        if any(record.fanout_copy for record in records):
            per_input = Counter((record.tp, record.source.offset) for record in records)
            # Set, not added: a redelivered input starts its count afresh.
            self._unacked.update({k: n for k, n in per_input.items() if n > 1})
        return [self._send(record, 1) for record in records]

    def _send(self, record: OutRecord, attempt: int) -> OutRecord:
        return self.out.send(record, lambda r: functools.partial(self._on_delivery, r, attempt))

    def _on_delivery(
        self, record: OutRecord, attempt: int, err: KafkaError | None, msg: Message
    ) -> None:
        if err is not None:
            self.health.delivery_failed()
            log.warning(
                "delivery_failed",
                error=str(err),
                attempt=attempt,
                topic=record.topic,
                source=f"{record.source.topic}[{record.source.partition}]@{record.source.offset}",
            )
            if attempt >= MAX_DELIVERY_ATTEMPTS:
                self._fatal = StreamError(
                    f"cannot deliver to {record.topic} after {attempt} attempts: {err}"
                )
            else:
                self._retry.append((record, attempt + 1))
            return
        self.health.acked((record,))
        key = (record.tp, record.source.offset)
        left = self._unacked.pop(key, 1) - 1
        if left > 0:
            self._unacked[key] = left
            return
        self.tracker.ack(record.tp, record.source.offset)

    def service(self, *, commit: bool) -> None:
        """One turn of the loop: delivery reports, retries, a periodic asynchronous commit."""
        self.producer.poll(0)
        self._produce_retries()
        if self._fatal is not None:
            raise self._fatal
        if commit and time.monotonic() - self._last_commit_at >= self.commit_interval_s:
            self.commit(sync=False)

    def _produce_retries(self) -> None:
        while self._retry:
            record, attempt = self._retry.pop(0)
            self._send(record, attempt)

    def flush(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = self.producer.flush(1.0)
            if self._fatal is not None:
                raise self._fatal
            if self._retry:
                self._produce_retries()
                continue
            if remaining == 0:
                return
            if time.monotonic() >= deadline:
                log.warning("flush_timeout", undelivered=remaining)
                return

    def commit(self, *, sync: bool, tps: set[TopicPartitionKey] | None = None) -> None:
        """Commit the acknowledged prefix of `tps` (default: every tracked partition)."""
        self._last_commit_at = time.monotonic()
        offsets = self.tracker.committable(tps)
        if not offsets:
            return
        parts = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            if sync:
                result = self.consumer.commit(offsets=parts, asynchronous=False)
                failed = [tp for tp in result or [] if tp.error is not None]
                if failed:
                    log.warning("commit_partially_failed", errors=[str(tp.error) for tp in failed])
            else:
                self.consumer.commit(offsets=parts, asynchronous=True)
        except KafkaException as exc:
            log.warning("commit_failed", error=str(exc.args[0]), offsets=fmt_offsets(offsets))
            return
        self.tracker.mark_committed(offsets)
        self.health.committed()
        log.debug("offsets_committed", offsets=fmt_offsets(offsets), sync=sync)

    def on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """The consumer's `on_commit` callback (asynchronous commits)."""
        if err is not None:
            log.warning("async_commit_failed", error=str(err))
            # Forget the optimistic mark so the next turn commits these offsets again.
            self.tracker.uncommit({(p.topic, p.partition) for p in partitions})

    def release(self, tps: set[TopicPartitionKey], *, lost: bool, closing: bool) -> None:
        """Revoked: flush and commit what was delivered for these partitions. Lost: another
        member may own them already, so nothing is committed for them. Either way they are
        forgotten; their undelivered inputs go to the next owner."""
        if not lost:
            if not closing:
                # On close the graceful path has flushed already, and after a failure waiting
                # for deliveries could block shutdown for the whole flush timeout.
                self.flush()
            self.commit(sync=True, tps=tps)
        self.tracker.revoke(tps)
        for key in [k for k in self._unacked if k[0] in tps]:
            del self._unacked[key]

    def finish(self) -> None:
        """Graceful end: every output delivered, every delivered input committed."""
        self.flush()
        self.commit(sync=True)

    def close(self, graceful: bool) -> None:
        if not graceful:
            # Even after a failure, what was acknowledged is safe to commit.
            self.commit(sync=True)
