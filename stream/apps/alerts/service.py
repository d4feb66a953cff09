"""The Kafka shell of `cryptosent alerts`: reads the output topic into `stream.core.windows`'s
index, publishes the alerts `stream.core.rules` decides, commits its offsets.

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
   are re-derived once the replay ends; their ids (a hash of asset, kind, window length and
   window start) are read back from the alerts topic at assignment and not published again
   (`publisher.known_alerts`).

Alerts are flushed before offsets are committed, so an alert is never lost (at-least-once), and
guard 2 removes the duplicate that at-least-once would otherwise allow. Downstream can still
dedupe on `alert_id` for runs that share no consumer group.

Readiness (`/readyz` next to `/metrics` when `metrics_port` is set): the group gave this
instance its assignment, the silent replay is over and every assigned partition has read its
look-back to the end. An empty assignment (a stand-by instance) is ready.

Run one instance per output topic: the index needs every partition. The consumer group gives
fail-over (a second instance takes over after the first dies), not scale-out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaException, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from ops.http import HealthServer
from ops.kafka import check_topics, consumer_config, producer_config
from ops.kafka.readback import lookback_offsets
from ops.logging import get_logger
from ops.settings import AlertsSettings, KafkaSettings, TopicsSettings
from schemas.alerts import Alert
from stream.apps.alerts.assignment import Assignment
from stream.apps.alerts.metrics import AlertsMetrics, AlertsStats
from stream.apps.alerts.publisher import AlertPublisher, known_alerts
from stream.core.windows import WindowStats

log = get_logger(__name__)


def plan_starts(
    partitions: Iterable[int], committed: dict[int, int], lookback: dict[int, int]
) -> tuple[dict[int, int], dict[int, int]]:
    """(start offset, replay end) per partition, from the group's committed offsets and the
    look-back offsets (-1: nothing after the cut-off). A partition is replayed silently from
    its start up to its committed offset when that lies beyond the start."""
    starts: dict[int, int] = {}
    replay_end: dict[int, int] = {}
    for p in partitions:
        done = committed.get(p)
        back = lookback.get(p, -1)
        if back < 0:
            start = done if done is not None else OFFSET_END
        else:
            start = back if done is None else min(back, done)
        starts[p] = start
        if done is not None and start >= 0 and done > start:
            replay_end[p] = done
    return starts, replay_end


class AlertsService:
    """`AlertsService(alerts, kafka, topics).run(stop_event)`: blocks until the event is set."""

    def __init__(
        self,
        cfg: AlertsSettings,
        kafka: KafkaSettings,
        topics: TopicsSettings,
        *,
        on_alert: Callable[[Alert], None] | None = None,
        on_window: Callable[[WindowStats], None] | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.kafka = kafka
        self.topic = topics.output
        self.alerts_topic = topics.alerts
        self.on_alert = on_alert
        self.on_window = on_window
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = AlertsMetrics(self.registry)
        self.stats = AlertsStats()
        self._clock = clock
        self._consumer: Consumer | None = None
        self._publisher: AlertPublisher | None = None
        self._current: Assignment | None = None
        self._last_commit = 0.0
        self._ready: tuple[bool, dict[str, Any]] = (False, {"assigned": None})
        self.assigned = threading.Event()
        # The /metrics, /healthz, /readyz server while `run` runs with a metrics port.
        self.http: HealthServer | None = None

    @property
    def horizon_s(self) -> float:
        """The margin of one window (plus lateness): the read-back of published alerts reaches
        this far before the look-back, and their ids are kept this long past their window."""
        return max(self.cfg.windows_s) + self.cfg.allowed_lateness_s

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """For /readyz: see the module docstring."""
        return self._ready

    def _update_readiness(self) -> None:
        current = self._current if self.assigned.is_set() else None
        if current is None:
            self._ready = (False, {"assigned": None})
            return
        behind = current.behind
        replaying = self.stats.replaying
        # One tuple, swapped whole: the HTTP thread never sees a half-updated state.
        self._ready = (
            not replaying and not behind,
            {"assigned": current.partitions, "replaying": replaying, "behind": behind},
        )

    # -- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        check_topics(self.kafka, [self.topic, self.alerts_topic])
        server = None
        if self.cfg.metrics_port is not None:
            server = self.http = HealthServer(
                self.cfg.metrics_host,
                self.cfg.metrics_port,
                self.registry,
                ready=self.readiness,
                name="alerts",
            ).start()
            log.info("alerts_metrics", host=self.cfg.metrics_host, port=server.port)
        producer = Producer(producer_config(self.kafka))
        self._publisher = AlertPublisher(
            producer, self.alerts_topic, self.stats, self.metrics, self.on_alert
        )
        consumer = self._consumer = Consumer(
            consumer_config(
                self.kafka,
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
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info(
            "alerts_started",
            topic=self.topic,
            alerts_topic=self.alerts_topic,
            group=self.cfg.group_id,
            windows_s=self.cfg.windows_s,
            asset_tickers=self.cfg.assets.tickers,
            asset_top_n=self.cfg.assets.top_n,
        )
        try:
            while not stop.is_set():
                for msg in consumer.consume(num_messages=500, timeout=0.2):
                    if self._current is not None:
                        self._current.receive(msg)
                if self._current is not None:
                    self._current.after_batch()
                self._publisher.poll()
                self._update_readiness()
                if time.monotonic() - self._last_commit >= self.cfg.commit_interval_s:
                    self._commit()
        finally:
            try:
                # close() revokes the assignment, whose callback flushes and commits.
                consumer.close()
            finally:
                producer.flush(10)
                self._consumer = None
                if server is not None:
                    server.stop()
                    self.http = None
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

    def _pause(self, partitions: list[int]) -> None:
        if self._consumer is not None:
            self._consumer.pause([TopicPartition(self.topic, p) for p in partitions])

    def _resume(self, partitions: list[int]) -> None:
        if self._consumer is not None:
            self._consumer.resume([TopicPartition(self.topic, p) for p in partitions])

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._publisher is not None
        self.stats.assignments += 1
        cutoff_ms = int(self._clock() * 1000) - int(self.cfg.lookback_s * 1000)
        numbers = [tp.partition for tp in partitions]
        starts: dict[int, int] = {}
        replay_end: dict[int, int] = {}
        if partitions:
            committed = consumer.committed(partitions, timeout=10)
            back = lookback_offsets(consumer, partitions, cutoff_ms, 10)
            starts, replay_end = plan_starts(
                numbers,
                {tp.partition: tp.offset for tp in committed if tp.offset >= 0},
                dict(zip(numbers, back, strict=True)),
            )
            for tp in partitions:
                tp.offset = starts[tp.partition]
            # An alert's window may have started up to one window length (plus lateness)
            # before the earliest record re-read, so the read-back reaches that much further.
            self._publisher.reset(
                known_alerts(
                    self.kafka,
                    self.alerts_topic,
                    cutoff_ms - int(self.horizon_s * 1000),
                    timeout_s=15,
                    horizon_s=self.horizon_s,
                )
            )
        self._current = Assignment(
            self.cfg,
            numbers,
            replay_end,
            cutoff_ms,
            publisher=self._publisher,
            stats=self.stats,
            metrics=self.metrics,
            pause=self._pause,
            resume=self._resume,
            clock=self._clock,
            on_window=self.on_window,
        )
        if partitions:
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
                partitions=numbers,
                start_offsets=starts,
                replay_until=replay_end,
                known_alert_ids=len(self._publisher.seen),
            )
        self.assigned.set()
        self._update_readiness()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._commit()
        self._current = None
        self.assigned.clear()
        self._update_readiness()

    # -- offsets ------------------------------------------------------------------------------

    def _commit(self) -> None:
        """Flush the alerts, then commit what produced them. Nothing is committed during the
        replay: the positions are behind the committed offsets then."""
        self._last_commit = time.monotonic()
        consumer, publisher, current = self._consumer, self._publisher, self._current
        if consumer is None or publisher is None or current is None:
            return
        if self.stats.replaying or not current.positions:
            return
        if not publisher.flush(10):
            return
        offsets = [
            TopicPartition(self.topic, p, off) for p, off in sorted(current.positions.items())
        ]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("alerts_commit_failed", error=str(exc.args[0]))


def run_alerts(
    cfg: AlertsSettings,
    kafka: KafkaSettings,
    topics: TopicsSettings,
    stop: threading.Event,
    *,
    on_alert: Callable[[Alert], None] | None = None,
) -> AlertsStats:
    """In-process entry point (the CLI, the demo, tests): run until `stop` is set."""
    service = AlertsService(cfg, kafka, topics, on_alert=on_alert)
    service.run(stop)
    return service.stats
