"""The dashboard's Kafka side: one consumer on the output and alerts topics, in a thread.

It assigns itself every partition instead of joining a group: no rebalance wait at start, and
every dashboard replica shows the whole stream (a shared group would split it between them). It
never commits; each start re-reads `dashboard.lookback_s` of history. Partitions added to the
topics later are picked up on the next start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from pydantic import ValidationError

from ops.kafka import check_topics, consumer_config
from ops.kafka.readback import before_cutoff, lookback_offsets
from ops.logging import get_logger
from ops.settings import DashboardSettings, KafkaSettings, TopicsSettings
from schemas.alerts import Alert
from schemas.messages import SentimentOut
from stream.apps.dashboard.state import DashboardState
from stream.core.windows import is_fanout_copy

log = get_logger(__name__)


class DashboardFeed:
    def __init__(
        self,
        cfg: DashboardSettings,
        kafka: KafkaSettings,
        topics: TopicsSettings,
        state: DashboardState,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.kafka = kafka
        self.state = state
        self.output = topics.output
        self.alerts = topics.alerts
        self._clock = clock
        self.error: str | None = None
        self.ready = threading.Event()
        self.alive = False

    def check(self) -> None:
        """Fail fast, in the caller's thread, when the topics are not there."""
        check_topics(self.kafka, [self.output, self.alerts])

    def run(self, stop: threading.Event) -> None:
        self.alive = True
        try:
            self._run(stop)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("dashboard_feed_failed", error=self.error)
            raise
        finally:
            self.alive = False

    def _run(self, stop: threading.Event) -> None:
        consumer = Consumer(consumer_config(self.kafka, self.cfg.group_id))
        try:
            cutoff_ms = int((self._clock() - self.cfg.lookback_s) * 1000)
            metadata = consumer.list_topics(timeout=10)
            tps = [
                TopicPartition(topic, p)
                for topic in (self.output, self.alerts)
                for p in sorted(metadata.topics[topic].partitions)
            ]
            for tp, start in zip(tps, lookback_offsets(consumer, tps, cutoff_ms, 10), strict=True):
                tp.offset = start if start >= 0 else OFFSET_END
            consumer.assign(tps)
            self.ready.set()
            log.info(
                "dashboard_feed_started",
                partitions=len(tps),
                lookback_s=self.cfg.lookback_s,
            )
            while not stop.is_set():
                for msg in consumer.consume(num_messages=500, timeout=0.2):
                    if msg.error() is not None:
                        log.warning("dashboard_consumer_error", error=str(msg.error()))
                        continue
                    # Brokers that cannot seek by time (Tansu) start at the beginning.
                    if before_cutoff(msg, cutoff_ms):
                        continue
                    self._handle(msg.topic() or "", msg.value(), msg.key())
        finally:
            consumer.close()

    def _handle(self, topic: str, value: bytes | None, key: bytes | None = None) -> None:
        try:
            if topic == self.output:
                record = SentimentOut.model_validate_json(value or b"")
                # Under asset fan-out, one input is counted once, as `alerts` counts it.
                if not is_fanout_copy(key, record):
                    self.state.add_record(record)
            else:
                self.state.add_alert(Alert.model_validate_json(value or b""))
        except (ValidationError, ValueError) as exc:
            self.state.note_invalid()
            log.warning("dashboard_invalid_record", topic=topic, error=str(exc).splitlines()[0])
