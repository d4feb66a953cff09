"""The Kafka shell of `serve`: one consumer in a group, one producer, the micro-batch loop.

Threads
    main ("Kafka thread"): owns the consumer and the producer; polls, decodes, batches, produces,
        commits, serves rebalance and delivery callbacks. It never runs the model, so it keeps
        polling far inside `max.poll.interval.ms` however slow inference is.
    stream-prep / stream-infer (`stream.processing.BatchPipeline`): clean + tokenize batch N+1
        while batch N runs forward. At most two batches are inside. A full batch takes a free
        slot at once (backlog: the device never waits for CPU preparation); a partial one, whose
        linger expired, waits for an empty pipeline and keeps growing (light load: it would only
        queue behind the running batch). When the forming batch reaches `batch_max_messages`
        the assigned partitions are paused (backpressure) and resumed once it leaves.
    stream-metrics: the HTTP server for /metrics, /healthz, /readyz.

Liveness: the model never runs on the thread that polls, so a slow forward pass (CPU, a burst of
long tweets, an OOM split) cannot exceed `max.poll.interval.ms`; paused partitions are still
polled. Rebalance callbacks finish at most the two in-flight batches before returning.

Delivery
    at_least_once: every output (or dead letter) is produced with a delivery callback; the
        `OffsetTracker` moves a partition's commit position only over inputs whose outputs, and
        all earlier inputs' outputs, were acknowledged. Commits are explicit, every
        `commit_interval_ms`, on revoke and at shutdown. A crash repeats work, never skips it.
    exactly_once: a transactional producer; per micro-batch, after inference: begin, produce the
        batch's records, send_offsets_to_transaction, commit. The transaction is open only for
        the produce + commit of an already computed batch (milliseconds), never across inference.
        On an abortable or fatal transaction error: abort (or recreate the producer), drop the
        in-flight batches and rewind the consumer to the group's committed offsets.
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from ops.errors import UserError
from ops.http import HealthServer
from ops.kafka import check_topics, consumer_config, create_topics, producer_config
from ops.logging import get_logger
from ops.settings import Settings
from schemas.messages import DeadLetter, DeadLetterKind
from stream.core import (
    Inbound,
    MicroBatcher,
    OffsetTracker,
    OutRecord,
    TopicPartitionKey,
    batch_offsets,
    decode_message,
)
from stream.metrics import StreamMetrics
from stream.processing import Batch, BatchPipeline, ModelLike, build_records, infer, prepare

log = get_logger(__name__)

_MAX_DELIVERY_ATTEMPTS = 5
_MAX_CONSECUTIVE_TXN_FAILURES = 5
_LAG_INTERVAL_S = 5.0
_BROKER_FRESH_S = 30.0
_TXN_TIMEOUT_S = 30.0


class StreamError(RuntimeError):
    """The worker cannot go on safely (broker refuses outputs, model broken): it stops without
    committing past what was delivered."""


@dataclass
class Counters:
    consumed: int = 0
    classified: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    outputs_acked: int = 0
    batches: int = 0
    commits: int = 0
    transaction_aborts: int = 0
    rebalances: int = 0
    delivery_errors: int = 0
    discarded_batches: int = 0
    # time.monotonic() of the first consumed input and of the last acknowledged output.
    first_consume_at: float | None = None
    last_output_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ensure_topics(settings: Settings, *, create: bool) -> None:
    """Unreachable broker or missing topic -> UserError; `create` makes the missing ones."""
    names = [*settings.topics.input, settings.topics.output, settings.topics.dead_letter]
    if create:
        made = create_topics(
            settings.kafka,
            names,
            partitions=settings.topics.partitions,
            replication_factor=settings.topics.replication_factor,
        )
        if made:
            log.info("topics_created", topics=made)
    else:
        check_topics(settings.kafka, names)


def transactional_id(settings: Settings) -> str:
    """Stable across restarts when a group instance id is configured (a restarted worker then
    fences its dead predecessor and aborts its open transaction at once); otherwise unique per
    process, which is safe because the group generation sent with the offsets fences zombies
    (KIP-447), at the cost of a dead worker's open transaction lingering until it times out."""
    prefix = settings.stream.transactional_id_prefix
    if settings.stream.group_instance_id:
        return f"{prefix}-{settings.stream.group_instance_id}"
    return f"{prefix}-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


# Under backlog a micro-batch of 8 forward batches lets plan_batches group similar lengths: on
# tweets (p50 20 / p99 128 tokens) that measured ~2x the throughput of one forward batch's worth.
MICRO_BATCH_FACTOR = 8


def micro_batch_size(settings: Settings) -> int:
    return settings.stream.batch_max_messages or MICRO_BATCH_FACTOR * settings.model.batch_size


def _torch_threads_init(threads: int | None) -> Callable[[], None] | None:
    """torch's intra-op thread count is per calling thread: set it where inference runs."""
    if threads is None:
        return None

    def init() -> None:
        import torch

        torch.set_num_threads(threads)

    return init


def _tp_str(tps: Any) -> list[str]:
    return sorted(f"{t}[{p}]" for t, p in tps)


class StreamWorker:
    """One serve worker. `run(stop_event)` blocks until the event is set, `max_messages` inputs
    were consumed, or nothing arrived for `idle_exit_s`; it then finishes the in-flight batches,
    flushes, commits, leaves the group and returns the counters."""

    def __init__(
        self,
        settings: Settings,
        model: ModelLike,
        *,
        max_messages: int | None = None,
        idle_exit_s: float | None = None,
        metrics: StreamMetrics | None = None,
        serve_http: bool = True,
        latency_observer: Callable[[float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.max_messages = max_messages
        self.idle_exit_s = idle_exit_s
        self.metrics = metrics or StreamMetrics()
        self.counters = Counters()
        self.exactly_once = settings.stream.processing_guarantee == "exactly_once"
        self.batch_max = micro_batch_size(settings)
        self.batcher: MicroBatcher[Inbound] = MicroBatcher(
            self.batch_max, settings.stream.batch_linger_ms / 1000.0
        )
        self.tracker = OffsetTracker()
        self._serve_http = serve_http
        # Benchmarks want exact percentiles, not histogram buckets: each end-to-end latency.
        self._latency_observer = latency_observer
        self._http: HealthServer | None = None
        self._consumer: Any = None
        self._producer: Any = None
        self._pipeline: BatchPipeline | None = None
        self._txn_id: str | None = None
        self._assigned: frozenset[TopicPartitionKey] = frozenset()
        self._paused: set[TopicPartitionKey] = set()
        self._position: dict[TopicPartitionKey, int] = {}
        # Exactly-once: the offsets our own committed transactions stored, per owned partition.
        self._txn_offsets: dict[TopicPartitionKey, int] = {}
        self._retry: list[tuple[OutRecord, int]] = []
        self._fatal: BaseException | None = None
        self._epoch = 0
        self._seq = 0
        self._needs_rewind = False
        self._closing = False
        self._txn_failures = 0
        self._started_at = time.monotonic()
        self._assigned_at: float | None = None
        self._last_input_at: float | None = None
        self._broker_ok_at: float | None = None
        self._last_commit_at = time.monotonic()
        self._last_lag_at = 0.0
        self.metrics_port: int | None = None
        self.started = threading.Event()

    @property
    def assigned(self) -> frozenset[TopicPartitionKey]:
        return frozenset(self._assigned)

    # -- lifecycle ------------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> Counters:
        stop = stop or threading.Event()
        self._start()
        graceful = False
        try:
            self._loop(stop)
            self._finish()
            graceful = True
        finally:
            self._close(graceful)
        return self.counters

    def _start(self) -> None:
        from confluent_kafka import Consumer

        s = self.settings
        self.metrics.model_loaded.set(1)
        if self._serve_http:
            try:
                self._http = HealthServer(
                    s.stream.metrics_host,
                    s.stream.metrics_port,
                    self.metrics.registry,
                    self.readiness,
                    name="serve",
                ).start()
            except OSError as exc:
                raise UserError(
                    f"cannot serve metrics on {s.stream.metrics_host}:{s.stream.metrics_port}: "
                    f"{exc.strerror or exc}",
                    hint="pick another --metrics-port, or 0 for a free one",
                ) from None
            self.metrics_port = self._http.port
            log.info("metrics_listening", host=s.stream.metrics_host, port=self._http.port)
        self._producer = self._make_producer()
        session = s.stream.session_timeout_ms
        conf = consumer_config(
            s.kafka,
            s.stream.group_id,
            **{
                "auto.offset.reset": s.stream.auto_offset_reset,
                "session.timeout.ms": session,
                "heartbeat.interval.ms": max(100, min(3000, session // 3)),
                "max.poll.interval.ms": max(s.stream.max_poll_interval_ms, session),
                # Only committed input: an upstream transactional producer's aborted or open
                # records are never classified.
                "isolation.level": "read_committed",
                # The broker answers a fetch as soon as data exists; this bounds the idle wait.
                "fetch.wait.max.ms": 100,
                "statistics.interval.ms": 5000,
                "error_cb": self._on_client_error,
                "stats_cb": self._on_stats,
                "on_commit": self._on_commit,
            },
        )
        if s.stream.group_instance_id:
            conf["group.instance.id"] = s.stream.group_instance_id
        self._consumer = Consumer(conf)
        self._consumer.subscribe(
            list(s.topics.input),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        batch_size = s.model.batch_size
        delay = s.stream.debug_inference_delay_s
        self._pipeline = BatchPipeline(
            functools.partial(prepare, model=self.model, batch_size=batch_size),
            functools.partial(infer, model=self.model, debug_delay_s=delay),
            max_in_flight=2,
            infer_thread_init=_torch_threads_init(s.stream.torch_threads),
        )
        if delay > 0:
            log.warning("debug_inference_delay_enabled", seconds=delay)
        log.info(
            "worker_started",
            group_id=s.stream.group_id,
            input=list(s.topics.input),
            output=s.topics.output,
            dead_letter=s.topics.dead_letter,
            guarantee=s.stream.processing_guarantee,
            transactional_id=self._txn_id,
            batch_size=batch_size,
            batch_max_messages=self.batch_max,
            linger_ms=s.stream.batch_linger_ms,
        )
        self.started.set()

    def _make_producer(self) -> Any:
        from confluent_kafka import KafkaException, Producer

        s = self.settings
        extra: dict[str, Any] = {"error_cb": self._on_client_error}
        if self.exactly_once:
            self._txn_id = self._txn_id or transactional_id(s)
            extra["transactional.id"] = self._txn_id
            extra["transaction.timeout.ms"] = s.stream.transaction_timeout_ms
        producer = Producer(producer_config(s.kafka, **extra))
        if self.exactly_once:
            try:
                producer.init_transactions(_TXN_TIMEOUT_S)
            except KafkaException as exc:
                raise UserError(
                    f"cannot start a transactional producer on {s.kafka.bootstrap_servers}: "
                    f"{exc.args[0]}",
                    hint="use --processing-guarantee at_least_once with brokers without "
                    "transactions",
                ) from None
        return producer

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if self.max_messages is not None and self.counters.consumed >= self.max_messages:
                log.info("max_messages_reached", consumed=self.counters.consumed)
                return
            if self._idle_expired():
                log.info("idle_exit", idle_exit_s=self.idle_exit_s)
                return
            if self._needs_rewind:
                self._rewind_to_committed()
            self._poll_inputs()
            self._dispatch()
            self._collect()
            self._service()

    def _finish(self) -> None:
        """Graceful end: the buffered and in-flight inputs are processed, outputs flushed,
        offsets committed."""
        assert self._pipeline is not None
        self._pause_all()
        deadline = time.monotonic() + 300.0
        while (len(self.batcher) or self._pipeline.in_flight) and time.monotonic() < deadline:
            self._dispatch(force=True)
            self._collect(timeout=0.05)
            self._service(commit=False)
        if not self.exactly_once:
            self._flush_producer()
            self._commit_offsets(sync=True)

    def _close(self, graceful: bool) -> None:
        self._closing = True
        try:
            if self._consumer is not None:
                if not graceful and not self.exactly_once:
                    # Even after a failure, what was acknowledged is safe to commit.
                    self._commit_offsets(sync=True)
                self._consumer.close()
        except Exception as exc:
            log.warning("consumer_close_failed", error=repr(exc))
        if self._pipeline is not None:
            self._pipeline.close()
        if self._producer is not None:
            if self.exactly_once and not graceful:
                # No transaction may be open, or the producer may already be fenced.
                with contextlib.suppress(Exception):
                    self._producer.abort_transaction(5.0)
            self._producer.flush(5.0)
        if self._http is not None:
            self._http.stop()
        # Drop the clients: a live librdkafka handle keeps reconnecting (and logging) for as long
        # as anything, such as the demo holding this worker, still references it.
        self._consumer = self._producer = None
        log.info("shutdown", graceful=graceful, **self.counters.as_dict())

    # -- the loop's steps -----------------------------------------------------------------------

    def _idle_expired(self) -> bool:
        if self.idle_exit_s is None:
            return False
        assert self._pipeline is not None
        if len(self.batcher) or self._pipeline.in_flight:
            return False
        if self._assigned_at is None:
            # Not in the group yet: a restart after a crash waits up to a session timeout for the
            # dead member to be evicted, which must not count as idle time.
            grace = self.settings.stream.session_timeout_ms / 1000.0 * 2
            return time.monotonic() - self._started_at >= self.idle_exit_s + grace
        ref = max(self._assigned_at, self._last_input_at or 0.0)
        return time.monotonic() - ref >= self.idle_exit_s

    def _poll_timeout(self) -> float:
        assert self._pipeline is not None
        if self._pipeline.in_flight:
            return 0.01  # a finished batch should not wait long for the next loop turn
        deadline = self.batcher.deadline()
        if deadline is not None:
            return min(0.05, max(0.0, deadline - time.monotonic()))
        return 0.1

    def _poll_inputs(self) -> None:
        from confluent_kafka import KafkaError

        room = self.batcher.room
        if self.max_messages is not None:
            room = min(room, self.max_messages - self.counters.consumed)
        msgs = self._consumer.consume(num_messages=max(1, room), timeout=self._poll_timeout())
        if not msgs:
            return
        now = datetime.now(UTC)
        fmt = self.settings.stream.input_format
        max_bytes = self.settings.stream.max_message_bytes
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                log.warning("consumer_error", error=str(err), fatal=err.fatal())
                if err.fatal():
                    raise StreamError(f"fatal consumer error: {err}")
                continue
            item = decode_message(msg, fmt, max_bytes, now)
            self._accept(item)

    def _accept(self, item: Inbound) -> None:
        mono = time.monotonic()
        tp = item.tp
        if not self.exactly_once:
            self.tracker.track(tp, item.offset)
        self._position[tp] = item.offset + 1
        self.counters.consumed += 1
        self.metrics.consumed.inc()
        if self.counters.first_consume_at is None:
            self.counters.first_consume_at = mono
        self._last_input_at = mono
        self._broker_ok_at = mono
        letter = item.dead_letter
        if letter is not None:
            log.warning(
                "dead_letter",
                kind=str(letter.error_kind),
                reason=letter.error_message,
                topic=item.source.topic,
                partition=item.source.partition,
                offset=item.source.offset,
            )
        self.batcher.add(item)

    def _dispatch(self, force: bool = False) -> None:
        """Close the forming batch when the pipeline can take it.

        A full batch takes the free slot at once, so under backlog one batch is prepared while
        the previous runs and the device never waits. A partial batch (linger expired) waits for
        an empty pipeline and keeps growing meanwhile: queued behind a running batch it would
        only add that batch's inference time to its latency, and a larger batch pads less.
        """
        assert self._pipeline is not None
        if not len(self.batcher) or not self._pipeline.can_accept():
            return
        if not (force or self.batcher.due()):
            return
        if self._pipeline.in_flight and not (force or self.batcher.full):
            return
        self._seq += 1
        items = self.batcher.take()
        self._pipeline.submit(Batch(seq=self._seq, items=items, epoch=self._epoch))
        self.metrics.in_flight.set(self._pipeline.in_flight)

    def _collect(self, timeout: float = 0.0) -> None:
        assert self._pipeline is not None
        while (batch := self._pipeline.poll_done(timeout)) is not None:
            timeout = 0.0
            self._publish(batch)
        self.metrics.in_flight.set(self._pipeline.in_flight)

    def _service(self, commit: bool = True) -> None:
        self._producer.poll(0)
        self._produce_retries()
        if self._fatal is not None:
            raise self._fatal
        now = time.monotonic()
        if (
            commit
            and not self.exactly_once
            and now - self._last_commit_at >= self.settings.stream.commit_interval_ms / 1000.0
        ):
            self._commit_offsets(sync=False)
        self._update_pause()
        if now - self._last_lag_at >= _LAG_INTERVAL_S:
            self._last_lag_at = now
            self._update_lag()

    # -- producing ------------------------------------------------------------------------------

    def _publish(self, batch: Batch) -> None:
        if batch.epoch != self._epoch:
            self.counters.discarded_batches += 1
            log.info("batch_discarded", seq=batch.seq, size=len(batch.items), reason="rewound")
            return
        if batch.error is not None:
            raise StreamError(f"micro-batch {batch.seq} failed: {batch.error!r}") from batch.error
        s = self.settings
        records = build_records(
            batch,
            labels=self.model.labels,
            model_version=self.model.model_version,
            include_text=s.stream.include_text,
            output_topic=s.topics.output,
            dead_letter_topic=s.topics.dead_letter,
        )
        self.metrics.batch_size.observe(len(batch.items))
        if batch.kept:
            self.metrics.inference_seconds.observe(batch.inference_seconds)
        if self.exactly_once:
            produced = self._commit_transaction(batch, records)
            if produced is None:
                return
        else:
            produced = [self._produce(record, attempt=1) for record in records]
        self._count_outcomes(produced)
        self.counters.batches += 1
        log.debug(
            "batch_published",
            seq=batch.seq,
            size=len(batch.items),
            classified=len(batch.kept),
            prep_s=round(batch.prep_seconds, 4),
            inference_s=round(batch.inference_seconds, 4),
            transactional=self.exactly_once,
        )

    def _count_outcomes(self, records: list[OutRecord]) -> None:
        m, c = self.metrics, self.counters
        for r in records:
            if r.outcome == "classified":
                c.classified += 1
                m.classified.labels(r.detail).inc()
            elif r.outcome == "skipped":
                c.skipped += 1
                m.skipped.labels(r.detail).inc()
            else:
                c.dead_lettered += 1
                m.dead_lettered.labels(r.detail).inc()
                if r.detail == "internal_error":  # decode-time dead letters are logged on intake
                    log.warning(
                        "dead_letter",
                        kind=r.detail,
                        topic=r.source.topic,
                        partition=r.source.partition,
                        offset=r.source.offset,
                    )

    def _produce(self, record: OutRecord, attempt: int) -> OutRecord:
        """Produce one record; returns what was actually produced (see `_too_large`)."""
        from confluent_kafka import KafkaError, KafkaException

        callback = (
            None if self.exactly_once else functools.partial(self._on_delivery, record, attempt)
        )
        while True:
            try:
                self._producer.produce(
                    record.topic, value=record.value, key=record.key, on_delivery=callback
                )
                return record
            except BufferError:
                # librdkafka's queue is full: serving delivery reports is what empties it.
                self._producer.poll(0.05)
            except KafkaException as exc:
                if (
                    exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE
                    or record.outcome == "too_large"
                ):
                    raise
                # An input under max_message_bytes can still make an output over the producer's
                # message.max.bytes (escaping, a raised limit); it must not become a poison pill.
                record = self._too_large(record)

    def _too_large(self, record: OutRecord) -> OutRecord:
        letter = DeadLetter(
            error_kind=DeadLetterKind.OVERSIZED,
            error_message=f"the output record ({len(record.value)} bytes) exceeds the producer's "
            "message.max.bytes; the input is not repeated here, see the source reference",
            payload_text="",
            key=None if record.key is None else record.key.decode("utf-8", errors="replace"),
            source=record.source,
            dead_lettered_at=datetime.now(UTC),
        )
        log.warning("dead_letter", kind="oversized", reason="output too large", topic=record.topic)
        return OutRecord(
            topic=self.settings.topics.dead_letter,
            key=record.key,
            value=letter.model_dump_json().encode("utf-8"),
            source=record.source,
            kafka_timestamp_ms=record.kafka_timestamp_ms,
            outcome="too_large",
            detail=str(DeadLetterKind.OVERSIZED),
        )

    def _on_delivery(self, record: OutRecord, attempt: int, err: Any, msg: Any) -> None:
        if err is not None:
            self.counters.delivery_errors += 1
            self.metrics.delivery_errors.inc()
            log.warning(
                "delivery_failed",
                error=str(err),
                attempt=attempt,
                topic=record.topic,
                source=f"{record.source.topic}[{record.source.partition}]@{record.source.offset}",
            )
            if attempt >= _MAX_DELIVERY_ATTEMPTS:
                self._fatal = StreamError(
                    f"cannot deliver to {record.topic} after {attempt} attempts: {err}"
                )
            else:
                self._retry.append((record, attempt + 1))
            return
        self.tracker.ack(record.tp, record.source.offset)
        self._acked(1, record.kafka_timestamp_ms)

    def _acked(self, n: int, kafka_ts_ms: int | None) -> None:
        mono = time.monotonic()
        self.counters.outputs_acked += n
        self.counters.last_output_at = mono
        self._broker_ok_at = mono
        self.metrics.outputs_acked.inc(n)
        if kafka_ts_ms is not None:
            self._observe_latency(max(0.0, time.time() - kafka_ts_ms / 1000.0))

    def _observe_latency(self, seconds: float) -> None:
        self.metrics.latency.observe(seconds)
        if self._latency_observer is not None:
            self._latency_observer(seconds)

    def _produce_retries(self) -> None:
        while self._retry:
            record, attempt = self._retry.pop(0)
            self._produce(record, attempt)

    def _flush_producer(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = self._producer.flush(1.0)
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

    # -- committing -----------------------------------------------------------------------------

    def _commit_offsets(self, *, sync: bool, tps: set[TopicPartitionKey] | None = None) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        self._last_commit_at = time.monotonic()
        offsets = self.tracker.committable(self._assigned if tps is None else tps)
        if not offsets or self._consumer is None:
            return
        parts = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            if sync:
                result = self._consumer.commit(offsets=parts, asynchronous=False)
                failed = [tp for tp in result or [] if tp.error is not None]
                if failed:
                    log.warning("commit_partially_failed", errors=[str(tp.error) for tp in failed])
            else:
                self._consumer.commit(offsets=parts, asynchronous=True)
        except KafkaException as exc:
            log.warning("commit_failed", error=str(exc.args[0]), offsets=self._fmt(offsets))
            return
        self.tracker.mark_committed(offsets)
        self.counters.commits += 1
        self.metrics.commits.inc()
        log.debug("offsets_committed", offsets=self._fmt(offsets), sync=sync)

    def _on_commit(self, err: Any, partitions: Any) -> None:
        if err is not None:
            log.warning("async_commit_failed", error=str(err))
            # Forget the optimistic mark so the next turn commits these offsets again.
            self.tracker.uncommit({(p.topic, p.partition) for p in partitions})

    @staticmethod
    def _fmt(offsets: dict[TopicPartitionKey, int]) -> dict[str, int]:
        return {f"{t}[{p}]": o for (t, p), o in sorted(offsets.items())}

    def _commit_transaction(self, batch: Batch, records: list[OutRecord]) -> list[OutRecord] | None:
        """One micro-batch, one transaction; returns the records produced, or None when it was
        aborted (the batch and everything after it is then dropped and re-consumed from the
        committed offsets)."""
        from confluent_kafka import KafkaException, TopicPartition

        offsets = batch_offsets(batch.items)
        parts = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        producer = self._producer
        try:
            producer.begin_transaction()
            produced = [self._produce(record, attempt=1) for record in records]
            self._txn_call(
                lambda: producer.send_offsets_to_transaction(
                    parts, self._consumer.consumer_group_metadata(), _TXN_TIMEOUT_S
                )
            )
            self._txn_call(lambda: producer.commit_transaction(_TXN_TIMEOUT_S))
        except KafkaException as exc:
            self._transaction_failed(exc.args[0], batch)
            return None
        self._txn_failures = 0
        self._txn_offsets.update(offsets)
        self.counters.commits += 1
        self.metrics.commits.inc()
        now = time.time()
        mono = time.monotonic()
        self.counters.outputs_acked += len(records)
        self.counters.last_output_at = mono
        self._broker_ok_at = mono
        self.metrics.outputs_acked.inc(len(records))
        for record in records:
            if record.kafka_timestamp_ms is not None:
                self._observe_latency(max(0.0, now - record.kafka_timestamp_ms / 1000.0))
        log.debug("transaction_committed", seq=batch.seq, offsets=self._fmt(offsets))
        return produced

    @staticmethod
    def _txn_call(fn: Any, attempts: int = 5) -> None:
        from confluent_kafka import KafkaException

        for attempt in range(1, attempts + 1):
            try:
                fn()
                return
            except KafkaException as exc:
                err = exc.args[0]
                if not err.retriable() or attempt == attempts:
                    raise
                log.warning("transaction_call_retry", error=str(err), attempt=attempt)
                time.sleep(0.1 * attempt)

    def _transaction_failed(self, err: Any, batch: Batch) -> None:
        from confluent_kafka import KafkaException

        self.counters.transaction_aborts += 1
        self.metrics.txn_aborts.inc()
        self._txn_failures += 1
        fatal = bool(err.fatal())
        log.warning(
            "transaction_failed",
            seq=batch.seq,
            error=str(err),
            fatal=fatal,
            abortable=bool(err.txn_requires_abort()),
        )
        if self._txn_failures > _MAX_CONSECUTIVE_TXN_FAILURES:
            raise StreamError(f"{self._txn_failures} transactions failed in a row; last: {err}")
        recreate = fatal
        if not fatal:
            try:
                self._producer.abort_transaction(_TXN_TIMEOUT_S)
            except KafkaException as exc:
                log.warning("transaction_abort_failed", error=str(exc.args[0]))
                recreate = True
        if recreate:
            # A fenced or otherwise fatal producer is unusable; a new one with the same
            # transactional.id aborts whatever the old one left open.
            with contextlib.suppress(Exception):
                self._producer.flush(0)
            self._producer = self._make_producer()
        # Batches behind this one consumed inputs after it: drop them and re-read everything
        # from the committed offsets.
        self._epoch += 1
        self._needs_rewind = True

    def _rewind_to_committed(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaException, TopicPartition

        self._needs_rewind = False
        self._epoch += 1
        self.batcher.take()
        self.tracker.clear()
        if not self._assigned:
            return
        # Our own committed transactions are the latest commits of partitions we still own:
        # exact, and independent of when the coordinator applies a transactional offset commit
        # to what an offset fetch returns. The broker is asked only for the other partitions.
        known = {tp: off for tp, off in self._txn_offsets.items() if tp in self._assigned}
        ask = [TopicPartition(t, p) for t, p in sorted(self._assigned) if (t, p) not in known]
        try:
            fetched = self._consumer.committed(ask, timeout=10.0) if ask else []
        except KafkaException as exc:
            raise StreamError(f"cannot read committed offsets to rewind: {exc.args[0]}") from None
        default = (
            OFFSET_BEGINNING if self.settings.stream.auto_offset_reset == "earliest" else OFFSET_END
        )
        targets = dict(known)
        for tp in fetched:
            targets[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else default
        where: dict[str, int] = {}
        for (topic, partition), offset in sorted(targets.items()):
            self._consumer.seek(TopicPartition(topic, partition, offset))
            self._position.pop((topic, partition), None)
            where[f"{topic}[{partition}]"] = offset
        log.warning("rewound_to_committed", offsets=where)

    # -- flow control and observability --------------------------------------------------------

    def _pause_all(self) -> None:
        from confluent_kafka import TopicPartition

        todo = self._assigned - self._paused
        if todo:
            self._consumer.pause([TopicPartition(t, p) for t, p in todo])
            self._paused |= todo

    def _update_pause(self) -> None:
        from confluent_kafka import TopicPartition

        if self.batcher.full:
            self._pause_all()
        elif self._paused:
            live = self._paused & self._assigned
            if live:
                self._consumer.resume([TopicPartition(t, p) for t, p in live])
            self._paused.clear()

    def _update_lag(self) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        for t, p in list(self._assigned):
            position = self._position.get((t, p))
            if position is None:
                continue
            try:
                watermarks = self._consumer.get_watermark_offsets(TopicPartition(t, p), cached=True)
            except KafkaException:
                continue
            if not watermarks or watermarks[1] < 0:
                continue
            self.metrics.lag.labels(t, str(p)).set(max(0, watermarks[1] - position))

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        seen = None if self._broker_ok_at is None else round(now - self._broker_ok_at, 1)
        broker_ok = seen is not None and seen < _BROKER_FRESH_S
        ready = bool(self._assigned) and broker_ok and not self._closing
        return ready, {
            "assigned_partitions": len(self._assigned),
            "model_loaded": True,
            "model_version": self.model.model_version,
            "broker_seen_s_ago": seen,
        }

    def _on_client_error(self, err: Any) -> None:
        from confluent_kafka import KafkaError

        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._broker_ok_at = None
        log.warning("kafka_client_error", error=str(err), fatal=err.fatal())

    def _on_stats(self, raw: str) -> None:
        try:
            stats = json.loads(raw)
        except ValueError:
            return
        brokers = stats.get("brokers", {}) if isinstance(stats, dict) else {}
        if any(
            b.get("state") == "UP" and b.get("nodeid", -1) >= 0
            for b in brokers.values()
            if isinstance(b, dict)
        ):
            self._broker_ok_at = time.monotonic()

    # -- rebalances -----------------------------------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        # Rebound, never mutated: other threads (readiness, tests) read it without a lock.
        self._assigned = self._assigned | tps
        self._assigned_at = time.monotonic()
        self._broker_ok_at = self._assigned_at
        self.counters.rebalances += 1
        self.metrics.rebalances.labels("assign").inc()
        self.metrics.assigned.set(len(self._assigned))
        log.info("rebalance", kind="assign", partitions=_tp_str(tps), assigned=len(self._assigned))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        self.counters.rebalances += 1
        self.metrics.rebalances.labels("revoke").inc()
        log.info("rebalance", kind="revoke", partitions=_tp_str(tps), closing=self._closing)
        try:
            self._release(tps, lost=False)
        finally:
            self._forget(tps)

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        self.counters.rebalances += 1
        self.metrics.rebalances.labels("lost").inc()
        log.warning("rebalance", kind="lost", partitions=_tp_str(tps))
        try:
            self._release(tps, lost=True)
        finally:
            self._forget(tps)

    def _release(self, tps: set[TopicPartitionKey], *, lost: bool) -> None:
        """Give partitions up. Revoked: the in-flight batches (which may hold their inputs) are
        finished and their outputs delivered and committed first. Lost: another member may
        already own them, so nothing is committed for them; their unprocessed inputs are
        dropped and will be redelivered to the new owner."""
        if not tps:
            return
        if not lost and not self._closing:
            self._drain_pipeline()
        dropped = self.batcher.drop(lambda item: item.tp in tps)
        if dropped:
            log.info("buffered_inputs_dropped", count=dropped, partitions=_tp_str(tps))
        if self.exactly_once:
            if lost:
                # In-flight batches may hold lost inputs whose offsets must not be committed
                # by us any more: drop them all and rewind the partitions that stay.
                self._epoch += 1
                self._needs_rewind = True
            return
        if not lost:
            if not self._closing:
                # On close the graceful path has flushed already, and after a failure waiting
                # for deliveries could block shutdown for the whole flush timeout.
                self._flush_producer()
            self._commit_offsets(sync=True, tps=tps)
        self.tracker.revoke(tps)

    def _drain_pipeline(self) -> None:
        if self._pipeline is None:
            return
        while self._pipeline.in_flight:
            batch = self._pipeline.poll_done(0.05)
            self._producer.poll(0)
            if batch is not None:
                self._publish(batch)

    def _forget(self, tps: set[TopicPartitionKey]) -> None:
        self._assigned = self._assigned - tps
        self._paused -= tps
        for t, p in tps:
            self._position.pop((t, p), None)
            self._txn_offsets.pop((t, p), None)
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(t, str(p))
        self.metrics.assigned.set(len(self._assigned))
