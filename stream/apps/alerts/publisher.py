"""Publishing alerts at most once per id: the alerts re-derived while replaying windows the
previous run judged are held back, and so are the ids already on the alerts topic.

The ids on the topic are read back at every assignment (`known_alerts`), from the look-back
minus the reach of one window, and forgotten once the watermark is past their window (see
`SeenAlerts`), so the memory they take stays bounded however long the service runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from confluent_kafka import KafkaError, Message, Producer
from pydantic import ValidationError

from ops.kafka.readback import read_since
from ops.logging import get_logger
from ops.settings import KafkaSettings
from schemas.alerts import Alert
from stream.apps.alerts.metrics import AlertsMetrics, AlertsStats
from stream.core.rules import SeenAlerts

log = get_logger(__name__)


def known_alerts(
    kafka: KafkaSettings, topic: str, since_ms: int, timeout_s: float, horizon_s: float
) -> SeenAlerts:
    """The alerts published since `since_ms`, by id (their key) and window end."""
    found = read_since(kafka, topic, since_ms, timeout_s, client="cryptosent-alerts-readback")
    seen = SeenAlerts(horizon_s)
    for key, value in found.records:
        if not key:
            continue
        try:
            alert = Alert.model_validate_json(value or b"")
        except (ValidationError, ValueError) as exc:
            # Not one of ours: nothing this service derives can have this id's window.
            log.warning("alerts_readback_invalid", error=str(exc).splitlines()[0])
            continue
        seen.add(key.decode("utf-8", "replace"), alert.window_end.timestamp())
    if found.incomplete:
        log.warning(
            "alerts_readback_incomplete",
            topic=topic,
            partitions=found.incomplete,
            hint="alerts published just before a crash may be published again",
        )
    return seen


class AlertPublisher:
    def __init__(
        self,
        producer: Producer,
        topic: str,
        stats: AlertsStats,
        metrics: AlertsMetrics,
        on_alert: Callable[[Alert], None] | None = None,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.stats = stats
        self.metrics = metrics
        self.on_alert = on_alert
        self.seen = SeenAlerts(math.inf)
        self.delivery_error: str | None = None

    def reset(self, seen: SeenAlerts) -> None:
        self.seen = seen
        self.metrics.known_ids.set(len(seen))

    def forget_before(self, watermark: float) -> None:
        if self.seen.forget_before(watermark):
            self.metrics.known_ids.set(len(self.seen))

    def emit(self, alert: Alert, *, replaying: bool) -> None:
        end = alert.window_end.timestamp()
        if replaying:
            self.stats.suppressed_replay += 1
            self.metrics.suppressed.labels("replay").inc()
            self.seen.add(alert.alert_id, end)
            self.metrics.known_ids.set(len(self.seen))
            return
        if alert.alert_id in self.seen:
            self.stats.suppressed_duplicate += 1
            self.metrics.suppressed.labels("already_published").inc()
            log.info("alert_already_published", alert_id=alert.alert_id, kind=alert.kind.value)
            return
        self.seen.add(alert.alert_id, end)
        self.metrics.known_ids.set(len(self.seen))
        self.producer.produce(
            self.topic,
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
            asset=alert.asset,
            kind=alert.kind.value,
            direction=alert.direction.value,
            window_s=alert.window_s,
            window_start=alert.window_start.isoformat(),
            message=alert.message,
        )
        if self.on_alert is not None:
            self.on_alert(alert)

    def poll(self) -> None:
        """Serve delivery reports; a failed delivery stops the service (it would be lost)."""
        self.producer.poll(0)
        if self.delivery_error is not None:
            raise RuntimeError(f"publishing an alert failed: {self.delivery_error}")

    def flush(self, timeout_s: float) -> bool:
        """True when every alert is delivered: only then may their inputs be committed."""
        left = self.producer.flush(timeout_s)
        if left or self.delivery_error is not None:
            log.warning("alerts_commit_skipped", unflushed=left, error=self.delivery_error)
            return False
        return True

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.delivery_error = str(err)
