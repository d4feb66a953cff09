"""What the dashboard page shows, built from output records and alerts. Pure and thread-safe: the
feed thread writes, the web server's event loop reads snapshots.

Memory is bounded: `max_points` buckets, `recent` tweets and alerts, and the alert ids kept for
de-duplication only while their window ended within `alert_horizon_s` of the newest alert's
(a repeat arrives soon after the original: at-least-once redelivery, or a restarted `alerts`
re-deriving windows of its look-back, which is the natural horizon)."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from schemas.alerts import Alert
from schemas.messages import Label, SentimentOut, Status
from stream.core.rules import SeenAlerts


@dataclass(slots=True)
class _Bucket:
    classified: int = 0
    positive: int = 0
    skipped: int = 0


def _epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


class DashboardState:
    def __init__(
        self,
        *,
        bucket_s: int = 5,
        rolling_s: int = 60,
        max_points: int = 360,
        recent: int = 50,
        time_axis: Literal["event", "processed"] = "processed",
        thresholds: tuple[float, float] = (0.3, 0.7),
        alert_horizon_s: float = 3600.0 + 900.0,
    ) -> None:
        self.bucket_s = bucket_s
        self.rolling_s = max(rolling_s, bucket_s)
        self.max_points = max_points
        self.time_axis = time_axis
        self.thresholds = thresholds
        self._lock = threading.Lock()
        self._buckets: dict[int, _Bucket] = {}
        self._tweets: deque[dict[str, Any]] = deque(maxlen=recent)
        self._alerts: deque[dict[str, Any]] = deque(maxlen=recent)
        self._alert_ids = SeenAlerts(alert_horizon_s)
        self._newest_alert_end: float | None = None
        self.alert_count = 0
        self.records = 0
        self.classified = 0
        self.positive = 0
        self.skipped = 0
        self.invalid = 0
        self.version = 0
        self.last_record_at: float | None = None

    def _when(self, rec: SentimentOut) -> float:
        if self.time_axis == "event" and rec.event_time is not None:
            return _epoch(rec.event_time)
        return _epoch(rec.processed_time)

    def add_record(self, rec: SentimentOut) -> None:
        start = int(self._when(rec) // self.bucket_s) * self.bucket_s
        with self._lock:
            bucket = self._buckets.get(start)
            if bucket is None:
                if len(self._buckets) >= self.max_points and start < min(self._buckets):
                    # Older than everything kept: it would be pruned at once.
                    bucket = _Bucket()
                else:
                    bucket = self._buckets[start] = _Bucket()
                    if len(self._buckets) > self.max_points:
                        del self._buckets[min(self._buckets)]
            self.records += 1
            self.last_record_at = _epoch(rec.processed_time)
            if rec.status is Status.CLASSIFIED:
                positive = rec.label is Label.POSITIVE
                bucket.classified += 1
                bucket.positive += int(positive)
                self.classified += 1
                self.positive += int(positive)
                self._tweets.appendleft(
                    {
                        "id": rec.id,
                        "label": rec.label.value if rec.label else None,
                        "p_positive": rec.p_positive,
                        "text": rec.text,
                        "event_time": rec.event_time.isoformat() if rec.event_time else None,
                        "processed_time": rec.processed_time.isoformat(),
                        "model_version": rec.model_version,
                    }
                )
            else:
                bucket.skipped += 1
                self.skipped += 1
            self.version += 1

    def add_alert(self, alert: Alert) -> None:
        with self._lock:
            # At-least-once delivery can repeat an alert; its id is deterministic.
            if alert.alert_id in self._alert_ids:
                return
            end = _epoch(alert.window_end)
            self._alert_ids.add(alert.alert_id, end)
            if self._newest_alert_end is None or end > self._newest_alert_end:
                self._newest_alert_end = end
                self._alert_ids.forget_before(end)
            self.alert_count += 1
            self._alerts.appendleft(alert.model_dump(mode="json"))
            self.version += 1

    @property
    def known_alert_ids(self) -> int:
        return len(self._alert_ids)

    def note_invalid(self) -> None:
        with self._lock:
            self.invalid += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            starts = sorted(self._buckets)
            buckets = [self._buckets[s] for s in starts]
            ratio: list[float | None] = []
            bucket_ratio: list[float | None] = []
            # Rolling sums over a sliding span of buckets (two pointers over sorted starts).
            lo = 0
            pos = cls = 0
            for hi, start in enumerate(starts):
                pos += buckets[hi].positive
                cls += buckets[hi].classified
                while starts[lo] <= start - self.rolling_s:
                    pos -= buckets[lo].positive
                    cls -= buckets[lo].classified
                    lo += 1
                ratio.append(round(pos / cls, 4) if cls else None)
                b = buckets[hi]
                bucket_ratio.append(round(b.positive / b.classified, 4) if b.classified else None)
            return {
                "version": self.version,
                "time_axis": self.time_axis,
                "bucket_s": self.bucket_s,
                "rolling_s": self.rolling_s,
                "thresholds": {"low": self.thresholds[0], "high": self.thresholds[1]},
                "totals": {
                    "records": self.records,
                    "classified": self.classified,
                    "positive": self.positive,
                    "skipped": self.skipped,
                    "invalid": self.invalid,
                    "bullish_ratio": (
                        round(self.positive / self.classified, 4) if self.classified else None
                    ),
                    "alerts": self.alert_count,
                },
                "series": {
                    "t": starts,
                    "ratio": ratio,
                    "bucket_ratio": bucket_ratio,
                    "volume": [b.classified for b in buckets],
                    "skipped": [b.skipped for b in buckets],
                },
                "tweets": list(self._tweets),
                "alerts": list(self._alerts),
                "last_record_at": self.last_record_at,
            }
