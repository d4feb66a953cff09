"""What a worker tells the outside: counters, Prometheus metrics, readiness, lag, and the one
log line of every dead letter."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
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

# librdkafka's statistics interval; each report says how many requests got an answer since the
# last one (`rtt.cnt` per broker), which is what tells a live broker from a hung one: a SIGSTOPed
# broker keeps its TCP connections "UP" for as long as the request timeout (60 s).
STATS_INTERVAL_MS = 1000
# /readyz turns not-ready when no broker round-trip (a fetch, heartbeat, produce or commit
# answer) was seen for this long: several stats intervals, so one late report never flaps it.
BROKER_FRESH_S = 5.0
# One `kafka_client_error` line per error kind per this many seconds; the rest are counted.
CLIENT_ERROR_LOG_INTERVAL_S = 30.0


class LogThrottle:
    """At most one line per key per `interval_s`; `allow` says whether to log now and how many
    were held back since the last line of that key."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def allow(self, key: str) -> int | None:
        """None: hold this one back (counted). Otherwise log it, with the returned count of the
        lines held back since the last one."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] += 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)

    def drain(self) -> dict[str, int]:
        """Lines held back and not reported yet, per key; forgets them and the intervals, so
        the next error of any kind is logged at once."""
        held = dict(self._held)
        self._held.clear()
        self._last.clear()
        return held


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
    """Counters and metrics of one worker, and whether it is ready: it owns partitions, saw a
    broker round-trip within `BROKER_FRESH_S` (and no all-brokers-down since), and is not
    closing. `clock` is monotonic seconds (injected by tests)."""

    def __init__(
        self,
        metrics: StreamMetrics,
        model_version: str,
        latency_observer: Callable[[float], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        client_error_interval_s: float = CLIENT_ERROR_LOG_INTERVAL_S,
    ) -> None:
        self.metrics = metrics
        self.counters = Counters()
        self.model_version = model_version
        # Benchmarks want exact percentiles, not histogram buckets: each end-to-end latency.
        self._latency_observer = latency_observer
        self._clock = clock
        self.broker_ok_at: float | None = None
        self.broker_down_since: float | None = None
        self.assigned_count = 0
        self.closing = False
        self.client_errors = LogThrottle(client_error_interval_s, clock)

    def broker_seen(self) -> None:
        """A real answer from the broker (records, an acknowledgement, a stats report with
        round-trips): ready again, and the errors held back meanwhile are summed up."""
        now = self._clock()
        self.broker_ok_at = now
        if self.broker_down_since is not None:
            held = self.client_errors.drain()
            log.info(
                "broker_reachable",
                after_s=round(now - self.broker_down_since, 1),
                kafka_client_errors_not_logged=held,
            )
            self.broker_down_since = None

    def _broker_lost(self) -> None:
        if self.broker_down_since is None:
            self.broker_down_since = self._clock()

    def consumed(self, item: Inbound) -> None:
        self.counters.consumed += 1
        self.metrics.consumed.inc()
        if self.counters.first_consume_at is None:
            self.counters.first_consume_at = self._clock()
        self.broker_seen()

    def acked(self, records: Iterable[OutRecord]) -> None:
        """Outputs the broker acknowledged (at-least-once) or committed (exactly-once)."""
        mono, now = self._clock(), time.time()
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
            self.broker_seen()
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
        self.broker_seen()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        now = self._clock()
        seen = None if self.broker_ok_at is None else round(now - self.broker_ok_at, 1)
        if seen is not None and seen >= BROKER_FRESH_S:
            self._broker_lost()
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
        """Not ready at once when every broker is down (cleared by the next round-trip). While a
        broker is away librdkafka reports the same error every few hundred ms: one line per
        error kind per interval, with the count held back since the last."""
        if is_all_brokers_down(err):
            self.broker_ok_at = None
        self._broker_lost()
        held = self.client_errors.allow(err.name())
        if held is None and not err.fatal():
            return
        log.warning(
            "kafka_client_error", error=str(err), fatal=err.fatal(), not_logged_since=held or 0
        )

    def on_stats(self, raw: str) -> None:
        """A report with any answered request (`rtt.cnt` > 0 on a broker) proves the broker
        works; connection state alone does not (a hung broker stays "UP")."""
        try:
            stats = json.loads(raw)
        except ValueError:
            return
        brokers = stats.get("brokers", {}) if isinstance(stats, dict) else {}
        for b in brokers.values() if isinstance(brokers, dict) else ():
            rtt = b.get("rtt") if isinstance(b, dict) else None
            if b.get("state") == "UP" and isinstance(rtt, dict) and rtt.get("cnt", 0) > 0:
                self.broker_seen()
                return

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
