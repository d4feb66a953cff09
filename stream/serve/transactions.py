"""Exactly-once: a transactional producer; per micro-batch, after inference: begin, produce the
batch's records, send_offsets_to_transaction, commit. The transaction is open only for the
produce + commit of an already computed batch (milliseconds), never across inference. On an
abortable or fatal transaction error: abort (or recreate the producer), drop the in-flight
batches and rewind the consumer to the group's committed offsets."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, KafkaException, TopicPartition

from ops.errors import UserError
from ops.kafka import ConsumerClient, ProducerClient, kafka_error
from ops.logging import get_logger
from stream.core import OutRecord, TopicPartitionKey, batch_offsets
from stream.core.steps import Batch
from stream.serve.delivery import Producing, StreamError, fmt_offsets
from stream.serve.health import Health

log = get_logger("stream.serve")

TXN_TIMEOUT_S = 30.0
MAX_CONSECUTIVE_TXN_FAILURES = 5


def init_transactions(producer: ProducerClient, bootstrap: str) -> ProducerClient:
    try:
        producer.init_transactions(TXN_TIMEOUT_S)
    except KafkaException as exc:
        raise UserError(
            f"cannot start a transactional producer on {bootstrap}: {exc.args[0]}",
            hint="use --processing-guarantee at_least_once with brokers without transactions",
        ) from None
    return producer


def _txn_call(fn: Callable[[], None], attempts: int = 5) -> None:
    for attempt in range(1, attempts + 1):
        try:
            fn()
            return
        except KafkaException as exc:
            err = kafka_error(exc)
            if not err.retriable() or attempt == attempts:
                raise
            log.warning("transaction_call_retry", error=str(err), attempt=attempt)
            time.sleep(0.1 * attempt)


class ExactlyOnce:
    """One micro-batch, one transaction. `invalidate()` (the worker's) drops every batch in
    flight and asks for a rewind to the committed offsets."""

    def __init__(
        self,
        producer: ProducerClient,
        make_producer: Callable[[], ProducerClient],
        consumer: ConsumerClient,
        health: Health,
        invalidate: Callable[[], None],
        *,
        dead_letter_topic: str,
        auto_offset_reset: str,
    ) -> None:
        self._make_producer = make_producer
        self.out = Producing(producer, dead_letter_topic)
        self.transactional_id: str | None = None
        self.consumer = consumer
        self.health = health
        self._invalidate = invalidate
        self._auto_offset_reset = auto_offset_reset
        self._failures = 0
        # The offsets our own committed transactions stored, per owned partition.
        self._txn_offsets: dict[TopicPartitionKey, int] = {}

    @property
    def producer(self) -> ProducerClient:
        return self.out.producer

    def consumed(self, item: object) -> None:
        """Offsets go with each batch's transaction: nothing to track per input."""

    def publish(self, batch: Batch, records: list[OutRecord]) -> list[OutRecord] | None:
        """Returns the records produced and committed, or None when the transaction was aborted
        (the batch and everything after it is then dropped and re-consumed)."""
        offsets = batch_offsets(batch.items)
        parts = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        producer = self.producer
        try:
            producer.begin_transaction()
            produced = [self.out.send(record) for record in records]
            # With transaction_committed (or transaction_failed), brackets the open transaction
            # for an outside observer (the chaos suite picks its kill moments from these lines).
            log.debug("transaction_begun", seq=batch.seq, records=len(records))
            _txn_call(
                lambda: producer.send_offsets_to_transaction(
                    parts, self.consumer.consumer_group_metadata(), TXN_TIMEOUT_S
                )
            )
            _txn_call(lambda: producer.commit_transaction(TXN_TIMEOUT_S))
        except KafkaException as exc:
            self._failed(kafka_error(exc), batch)
            return None
        self._failures = 0
        self._txn_offsets.update(offsets)
        self.health.committed()
        self.health.acked(records)
        log.debug("transaction_committed", seq=batch.seq, offsets=fmt_offsets(offsets))
        return produced

    def _failed(self, err: KafkaError, batch: Batch) -> None:
        self.health.counters.transaction_aborts += 1
        self.health.metrics.txn_aborts.inc()
        self._failures += 1
        fatal = bool(err.fatal())
        log.warning(
            "transaction_failed",
            seq=batch.seq,
            error=str(err),
            fatal=fatal,
            abortable=bool(err.txn_requires_abort()),
        )
        if self._failures > MAX_CONSECUTIVE_TXN_FAILURES:
            raise StreamError(f"{self._failures} transactions failed in a row; last: {err}")
        recreate = fatal
        if not fatal:
            try:
                self.producer.abort_transaction(TXN_TIMEOUT_S)
            except KafkaException as exc:
                log.warning("transaction_abort_failed", error=str(exc.args[0]))
                recreate = True
        if recreate:
            # A fenced or otherwise fatal producer is unusable; a new one with the same
            # transactional.id aborts whatever the old one left open.
            with contextlib.suppress(Exception):
                self.producer.flush(0)
            self.out.producer = self._make_producer()
        # Batches behind this one consumed inputs after it: drop them and re-read everything
        # from the committed offsets.
        self._invalidate()

    def rewind(self, assigned: Iterable[TopicPartitionKey]) -> list[TopicPartitionKey]:
        """Seek every owned partition back to its committed offset; returns those moved."""
        owned = set(assigned)
        if not owned:
            return []
        # Our own committed transactions are the latest commits of partitions we still own:
        # exact, and independent of when the coordinator applies a transactional offset commit
        # to what an offset fetch returns. The broker is asked only for the other partitions.
        known = {tp: off for tp, off in self._txn_offsets.items() if tp in owned}
        ask = [TopicPartition(t, p) for t, p in sorted(owned) if (t, p) not in known]
        try:
            fetched = self.consumer.committed(ask, timeout=10.0) if ask else []
        except KafkaException as exc:
            raise StreamError(f"cannot read committed offsets to rewind: {exc.args[0]}") from None
        default = OFFSET_BEGINNING if self._auto_offset_reset == "earliest" else OFFSET_END
        targets = dict(known)
        for tp in fetched:
            targets[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else default
        for (topic, partition), offset in sorted(targets.items()):
            self.consumer.seek(TopicPartition(topic, partition, offset))
        log.warning("rewound_to_committed", offsets=fmt_offsets(targets))
        return sorted(targets)

    def service(self, *, commit: bool) -> None:
        self.producer.poll(0)

    def release(self, tps: set[TopicPartitionKey], *, lost: bool, closing: bool) -> None:
        if lost:
            # In-flight batches may hold lost inputs whose offsets must not be committed by us
            # any more: drop them all and rewind the partitions that stay.
            self._invalidate()
        for tp in tps:
            self._txn_offsets.pop(tp, None)

    def finish(self) -> None:
        """Every published batch was committed in its own transaction: nothing left to do."""

    def close(self, graceful: bool) -> None:
        if not graceful:
            # No transaction may be open, or the producer may already be fenced.
            with contextlib.suppress(Exception):
                self.producer.abort_transaction(5.0)
