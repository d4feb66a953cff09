"""What a worker tells the outside: counters, Prometheus metrics, readiness, lag, and the one
log line of every dead letter."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from ops.errors import UserError
from ops.http import HealthServer
from ops.kafka import ConsumerClient, is_all_brokers_down
from ops.logging import get_logger
from stream.core import Inbound, Outcome, OutRecord, TopicPartitionKey
from stream.serve.metrics import StreamMetrics

log = get_logger("stream.serve")

# /readyz turns not-ready when nothing was heard from the broker for this long.
BROKER_FRESH_S = 30.0


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


class Health:
    """Counters and metrics of one worker, and whether it is ready: it owns partitions, heard
    from the broker within `BROKER_FRESH_S`, and is not closing."""

    def __init__(
        self,
        metrics: StreamMetrics,
        model_version: str,
        latency_observer: Callable[[float], None] | None = None,
    ) -> None:
        self.metrics = metrics
        self.counters = Counters()
        self.model_version = model_version
        # Benchmarks want exact percentiles, not histogram buckets: each end-to-end latency.
        self._latency_observer = latency_observer
        self.broker_ok_at: float | None = None
        self.assigned_count = 0
        self.closing = False

    def broker_seen(self) -> None:
        self.broker_ok_at = time.monotonic()

    def consumed(self, item: Inbound) -> None:
        mono = time.monotonic()
        self.counters.consumed += 1
        self.metrics.consumed.inc()
        if self.counters.first_consume_at is None:
            self.counters.first_consume_at = mono
        self.broker_ok_at = mono

    def acked(self, records: Iterable[OutRecord]) -> None:
        """Outputs the broker acknowledged (at-least-once) or committed (exactly-once)."""
        mono, now = time.monotonic(), time.time()
        n = 0
        for record in records:
            n += 1
            if record.kafka_timestamp_ms is not None:
                seconds = max(0.0, now - record.kafka_timestamp_ms / 1000.0)
                self.metrics.latency.observe(seconds)
                if self._latency_observer is not None:
                    self._latency_observer(seconds)
        if n:
            self.counters.outputs_acked += n
            self.counters.last_output_at = mono
            self.broker_ok_at = mono
            self.metrics.outputs_acked.inc(n)

    def outcomes(self, records: Iterable[OutRecord]) -> None:
        """Count what was produced; every dead letter, whenever it was decided, is logged here."""
        m, c = self.metrics, self.counters
        for r in records:
            if r.outcome is Outcome.CLASSIFIED:
                c.classified += 1
                m.classified.labels(r.detail).inc()
            elif r.outcome is Outcome.SKIPPED:
                c.skipped += 1
                m.skipped.labels(r.detail).inc()
            else:
                c.dead_lettered += 1
                m.dead_lettered.labels(r.detail).inc()
                log.warning(
                    "dead_letter",
                    kind=r.detail,
                    reason=r.reason,
                    outcome=str(r.outcome),
                    topic=r.source.topic,
                    partition=r.source.partition,
                    offset=r.source.offset,
                )

    def delivery_failed(self) -> None:
        self.counters.delivery_errors += 1
        self.metrics.delivery_errors.inc()

    def committed(self) -> None:
        self.counters.commits += 1
        self.metrics.commits.inc()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        seen = None if self.broker_ok_at is None else round(now - self.broker_ok_at, 1)
        broker_ok = seen is not None and seen < BROKER_FRESH_S
        ready = self.assigned_count > 0 and broker_ok and not self.closing
        return ready, {
            "assigned_partitions": self.assigned_count,
            "model_loaded": True,
            "model_version": self.model_version,
            "broker_seen_s_ago": seen,
        }

    # librdkafka callbacks (they run on the Kafka thread, inside poll/consume/flush).

    def on_client_error(self, err: KafkaError) -> None:
        if is_all_brokers_down(err):
            self.broker_ok_at = None
        log.warning("kafka_client_error", error=str(err), fatal=err.fatal())

    def on_stats(self, raw: str) -> None:
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
            self.broker_ok_at = time.monotonic()

    def update_lag(self, consumer: ConsumerClient, positions: dict[TopicPartitionKey, int]) -> None:
        for (t, p), position in list(positions.items()):
            try:
                low_high = consumer.get_watermark_offsets(TopicPartition(t, p), cached=True)
            except KafkaException:
                continue
            if not low_high or low_high[1] < 0:
                continue
            self.metrics.lag.labels(t, str(p)).set(max(0, low_high[1] - position))

    def forget_lag(self, tps: Iterable[TopicPartitionKey]) -> None:
        for t, p in tps:
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(t, str(p))


def start_http(health: Health, host: str, port: int) -> HealthServer:
    """/metrics, /healthz and /readyz of one worker; a busy port is a one-line UserError."""
    try:
        server = HealthServer(
            host, port, health.metrics.registry, health.readiness, name="serve"
        ).start()
    except OSError as exc:
        raise UserError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}",
            hint="pick another --metrics-port, or 0 for a free one",
        ) from None
    log.info("metrics_listening", host=host, port=server.port)
    return server
