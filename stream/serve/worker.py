"""The Kafka shell of `serve`: one consumer in a group, one producer, the micro-batch loop. It
composes small parts, as quix-streams composes its producer, checkpoint and pausing manager:

    pipeline.BatchPipeline       stream-prep / stream-infer threads: clean + tokenize batch N+1
                                 while batch N runs forward (steps from `stream.core.steps`)
    delivery.AtLeastOnce         delivery callbacks, retries, offset commits
    transactions.ExactlyOnce     one transaction per micro-batch, abort and rewind
    rebalance.Partitions         assignment, revoke/lost, pause/resume (back-pressure)
    health.Health                counters, metrics, readiness, the dead-letter log line

Threads: the main ("Kafka") thread owns the consumer and the producer; it polls, decodes,
batches, produces, commits, and serves rebalance and delivery callbacks. It never runs the model,
so it keeps polling far inside `max.poll.interval.ms` however slow inference is. At most two
batches are in the pipeline. A full batch takes a free slot at once (backlog: the device never
waits for CPU preparation); a partial one, whose linger expired, waits for an empty pipeline and
keeps growing (light load: it would only queue behind the running batch). When the forming batch
reaches `batch_max_messages` the assigned partitions are paused and resumed once it leaves.
`stream-metrics` (ops.http) serves /metrics, /healthz, /readyz.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from ops.http import HealthServer
from ops.kafka import (
    ClientFactory,
    ConfluentClients,
    ConsumerClient,
    is_partition_eof,
    message_timestamp_ms,
)
from ops.logging import get_logger
from stream.backends.base import Backend
from stream.core import Inbound, MicroBatcher, TextPipelineLike, TopicPartitionKey, decode_message
from stream.core.assets import AssetExtractor
from stream.core.steps import Batch, build_records
from stream.serve.config import ServeConfig, ensure_topics, open_clients
from stream.serve.delivery import AtLeastOnce, StreamError
from stream.serve.health import Counters, Health, start_http
from stream.serve.metrics import StreamMetrics
from stream.serve.pipeline import BatchPipeline
from stream.serve.rebalance import Partitions, tp_str
from stream.serve.transactions import ExactlyOnce

log = get_logger("stream.serve")

_LAG_INTERVAL_S = 5.0

__all__ = ["Counters", "StreamError", "StreamWorker", "ensure_topics"]


class StreamWorker:
    """One serve worker over `backend` (any `stream.backends.base.Backend`) and the artifact's
    text `pipeline`. `run(stop_event)` blocks until the event is set, `max_messages` inputs were
    consumed, or nothing arrived for `idle_exit_s`; it then finishes the in-flight batches,
    flushes, commits, leaves the group and returns the counters."""

    def __init__(
        self,
        config: ServeConfig,
        backend: Backend,
        pipeline: TextPipelineLike,
        *,
        max_messages: int | None = None,
        idle_exit_s: float | None = None,
        metrics: StreamMetrics | None = None,
        serve_http: bool = True,
        latency_observer: Callable[[float], None] | None = None,
        clients: ClientFactory | None = None,
        assets: AssetExtractor | None = None,
    ) -> None:
        self.config = config
        # Loaded here when the caller did not, so a bad map fails before anything connects.
        self.assets = assets or config.asset_extractor()
        self.backend = backend
        self.text_pipeline = pipeline
        self.max_messages = max_messages
        self.idle_exit_s = idle_exit_s
        self.metrics = metrics or StreamMetrics()
        self.health = Health(self.metrics, backend.model_version, latency_observer)
        self.exactly_once = config.exactly_once
        self.batch_max = config.batch_max
        self.batcher: MicroBatcher[Inbound] = MicroBatcher(
            self.batch_max, config.stream.batch_linger_ms / 1000.0
        )
        self.partitions = Partitions(self.health, self._release)
        self._clients = clients or ConfluentClients()
        self._serve_http = serve_http
        self._http: HealthServer | None = None
        self._consumer: ConsumerClient | None = None
        self._delivery: AtLeastOnce | ExactlyOnce | None = None
        self._pipeline: BatchPipeline | None = None
        self._epoch = 0
        self._seq = 0
        self._needs_rewind = False
        self._started_at = time.monotonic()
        self._last_input_at: float | None = None
        self._last_lag_at = 0.0
        self.metrics_port: int | None = None
        self.started = threading.Event()

    @property
    def counters(self) -> Counters:
        return self.health.counters

    @property
    def assigned(self) -> frozenset[TopicPartitionKey]:
        return self.partitions.assigned

    def readiness(self) -> tuple[bool, dict[str, object]]:
        return self.health.readiness()

    # -- lifecycle ------------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> Counters:
        stop = stop or threading.Event()
        self._start()
        try:
            self._loop(stop)
            self._finish()
        except BaseException:
            self._close(graceful=False)
            raise
        self._close(graceful=True)
        return self.counters

    def _start(self) -> None:
        cfg, s = self.config, self.config.stream
        self.metrics.model_loaded.set(1)
        if self._serve_http:
            self._http = start_http(self.health, s.metrics_host, s.metrics_port)
            self.metrics_port = self._http.port
        consumer, self._delivery = open_clients(cfg, self._clients, self.health, self._invalidate)
        self._consumer = consumer
        consumer.subscribe(
            list(cfg.topics.input),
            on_assign=self.partitions.on_assign,
            on_revoke=self.partitions.on_revoke,
            on_lost=self.partitions.on_lost,
        )
        self._pipeline = BatchPipeline.for_backend(
            self.text_pipeline,
            self.backend,
            cfg.model.batch_size,
            s.torch_threads,
            extractor=self.assets,
        )
        log.info(
            "worker_started",
            group_id=s.group_id,
            input=list(cfg.topics.input),
            output=cfg.topics.output,
            dead_letter=cfg.topics.dead_letter,
            guarantee=s.processing_guarantee,
            transactional_id=self._delivery.transactional_id,
            backend=self.backend.name,
            batch_size=cfg.model.batch_size,
            batch_max_messages=self.batch_max,
            linger_ms=s.batch_linger_ms,
            asset_map_version=self.assets.version,
            output_key=s.output_key,
        )
        self.started.set()

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if self.max_messages is not None and self.counters.consumed >= self.max_messages:
                log.info("max_messages_reached", consumed=self.counters.consumed)
                return
            if self._idle_expired():
                log.info("idle_exit", idle_exit_s=self.idle_exit_s)
                return
            if self._needs_rewind:
                self._rewind()
            self._poll_inputs()
            self._dispatch()
            self._collect()
            self._service()

    def _finish(self) -> None:
        """Graceful end: the buffered and in-flight inputs are processed, outputs flushed,
        offsets committed."""
        assert self._pipeline is not None
        assert self._delivery is not None
        assert self._consumer is not None
        self.partitions.pause_all(self._consumer)
        deadline = time.monotonic() + 300.0
        while (len(self.batcher) or self._pipeline.in_flight) and time.monotonic() < deadline:
            self._dispatch(force=True)
            self._collect(timeout=0.05)
            self._service(commit=False)
        self._delivery.finish()

    def _close(self, graceful: bool) -> None:
        self.health.closing = True
        try:
            if self._consumer is not None:
                if self._delivery is not None and not self.exactly_once:
                    self._delivery.close(graceful)
                self._consumer.close()
        except Exception as exc:
            log.warning("consumer_close_failed", error=repr(exc))
        if self._pipeline is not None:
            self._pipeline.close()
        if self._delivery is not None:
            if self.exactly_once:
                self._delivery.close(graceful)
            self._delivery.producer.flush(5.0)
        if self._http is not None:
            self._http.stop()
        # Drop the clients: a live librdkafka handle keeps reconnecting (and logging) for as long
        # as anything, such as the demo holding this worker, still references it.
        self._consumer = None
        self._delivery = None
        log.info("shutdown", graceful=graceful, **self.counters.as_dict())

    # -- the loop's steps -----------------------------------------------------------------------

    def _idle_expired(self) -> bool:
        if self.idle_exit_s is None:
            return False
        assert self._pipeline is not None
        if len(self.batcher) or self._pipeline.in_flight:
            return False
        assigned_at = self.partitions.assigned_at
        if assigned_at is None:
            # Not in the group yet: a restart after a crash waits up to a session timeout for the
            # dead member to be evicted, which must not count as idle time.
            grace = self.config.stream.session_timeout_ms / 1000.0 * 2
            return time.monotonic() - self._started_at >= self.idle_exit_s + grace
        ref = max(assigned_at, self._last_input_at or 0.0)
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
        assert self._consumer is not None
        assert self._delivery is not None
        room = self.batcher.room
        if self.max_messages is not None:
            room = min(room, self.max_messages - self.counters.consumed)
        msgs = self._consumer.consume(num_messages=max(1, room), timeout=self._poll_timeout())
        if not msgs:
            return
        now = datetime.now(UTC)
        fmt = self.config.stream.input_format
        max_bytes = self.config.stream.max_message_bytes
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if is_partition_eof(err):
                    continue
                held = self.health.client_errors.allow(f"consumer:{err.name()}")
                if held is not None or err.fatal():
                    log.warning(
                        "consumer_error", error=str(err), fatal=err.fatal(), not_logged_since=held
                    )
                if err.fatal():
                    raise StreamError(f"fatal consumer error: {err}")
                continue
            item = decode_message(msg, fmt, max_bytes, now, timestamp_ms=message_timestamp_ms(msg))
            self._delivery.consumed(item)
            self.partitions.position[item.tp] = item.offset + 1
            self.health.consumed(item)
            self._last_input_at = time.monotonic()
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
        assert self._delivery is not None
        assert self._consumer is not None
        self._delivery.service(commit=commit)
        self.partitions.update_pause(self._consumer, self.batcher.full)
        now = time.monotonic()
        if now - self._last_lag_at >= _LAG_INTERVAL_S:
            self._last_lag_at = now
            self.health.update_lag(self._consumer, self.partitions.position)

    def _publish(self, batch: Batch) -> None:
        assert self._delivery is not None
        if batch.epoch != self._epoch:
            self.counters.discarded_batches += 1
            log.info("batch_discarded", seq=batch.seq, size=len(batch.items), reason="rewound")
            return
        if batch.error is not None:
            raise StreamError(f"micro-batch {batch.seq} failed: {batch.error!r}") from batch.error
        cfg = self.config
        records = build_records(
            batch,
            labels=self.backend.labels,
            model_version=self.backend.model_version,
            include_text=cfg.stream.include_text,
            output_topic=cfg.topics.output,
            dead_letter_topic=cfg.topics.dead_letter,
            asset_map_version=self.assets.version,
            output_key=cfg.stream.output_key,
        )
        self.metrics.batch_size.observe(len(batch.items))
        if batch.kept:
            self.metrics.inference_seconds.observe(batch.inference_seconds)
        produced = self._delivery.publish(batch, records)
        if produced is None:
            return
        # Outcomes per input: a fanned-out input's extra records are outputs, not outcomes.
        self.health.outcomes(r for r in produced if not r.fanout_copy)
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

    # -- rewinds and rebalances -----------------------------------------------------------------

    def _invalidate(self) -> None:
        """Drop every batch in flight (their epoch is now stale) and rewind on the next turn."""
        self._epoch += 1
        self._needs_rewind = True

    def _rewind(self) -> None:
        assert isinstance(self._delivery, ExactlyOnce)
        self._needs_rewind = False
        self._epoch += 1
        self.batcher.take()
        for tp in self._delivery.rewind(self.partitions.assigned):
            self.partitions.position.pop(tp, None)

    def _release(self, tps: set[TopicPartitionKey], lost: bool) -> None:
        """Give partitions up. Revoked: the in-flight batches (which may hold their inputs) are
        finished and their outputs delivered first. Lost: their unprocessed inputs are dropped
        and will be redelivered to the new owner."""
        closing = self.health.closing
        if not lost and not closing:
            self._drain_pipeline()
        dropped = self.batcher.drop(lambda item: item.tp in tps)
        if dropped:
            log.info("buffered_inputs_dropped", count=dropped, partitions=tp_str(tps))
        if self._delivery is not None:
            self._delivery.release(tps, lost=lost, closing=closing)

    def _drain_pipeline(self) -> None:
        if self._pipeline is None or self._delivery is None:
            return
        while self._pipeline.in_flight:
            batch = self._pipeline.poll_done(0.05)
            self._delivery.producer.poll(0)
            if batch is not None:
                self._publish(batch)
