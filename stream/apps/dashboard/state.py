"""What the dashboard page shows, built from output records and alerts. Pure and thread-safe: the
feed thread writes, the web server's event loop reads snapshots.

One view for all assets and one per asset (`SentimentOut.assets`, attributed like the alerts
service does: the primary asset only, or every asset named). A snapshot is of one view, chosen by
the page's asset selector, plus the list of assets to choose from.

Memory is bounded: `max_points` buckets and `recent` tweets and alerts per view, at most
`max_assets` asset views (the least recently active one makes room for a new asset), and the
alert ids kept for de-duplication only while their window ended within `alert_horizon_s` of the
newest alert's (a repeat arrives soon after the original: at-least-once redelivery, or a
restarted `alerts` re-deriving windows of its look-back, which is the natural horizon)."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from schemas.alerts import Alert
from schemas.messages import Label, SentimentOut, Status
from stream.core.rules import SeenAlerts

# The key of the default thresholds in `asset_thresholds` (as in alerts.assets.rules).
ANY_ASSET = "*"


@dataclass(slots=True)
class _Bucket:
    classified: int = 0
    positive: int = 0
    skipped: int = 0


@dataclass(slots=True)
class _View:
    """The chart buckets, counters, recent tweets and alerts of all assets or of one asset."""

    recent: int
    buckets: dict[int, _Bucket] = field(default_factory=dict)
    tweets: deque[dict[str, Any]] = field(init=False)
    alerts: deque[dict[str, Any]] = field(init=False)
    records: int = 0
    classified: int = 0
    positive: int = 0
    skipped: int = 0
    alert_count: int = 0

    def __post_init__(self) -> None:
        self.tweets = deque(maxlen=self.recent)
        self.alerts = deque(maxlen=self.recent)

    def bucket(self, start: int, max_points: int) -> _Bucket:
        bucket = self.buckets.get(start)
        if bucket is None:
            if len(self.buckets) >= max_points and start < min(self.buckets):
                # Older than everything kept: it would be pruned at once.
                return _Bucket()
            bucket = self.buckets[start] = _Bucket()
            if len(self.buckets) > max_points:
                del self.buckets[min(self.buckets)]
        return bucket

    def add(self, rec: SentimentOut, start: int, max_points: int, tweet: dict[str, Any]) -> None:
        bucket = self.bucket(start, max_points)
        self.records += 1
        if rec.status is Status.CLASSIFIED:
            positive = rec.label is Label.POSITIVE
            bucket.classified += 1
            bucket.positive += int(positive)
            self.classified += 1
            self.positive += int(positive)
            self.tweets.appendleft(tweet)
        else:
            bucket.skipped += 1
            self.skipped += 1

    @property
    def bullish_ratio(self) -> float | None:
        return round(self.positive / self.classified, 4) if self.classified else None


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
        max_assets: int = 20,
        attribution: Literal["primary", "every"] = "primary",
        asset_thresholds: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self.bucket_s = bucket_s
        self.rolling_s = max(rolling_s, bucket_s)
        self.max_points = max_points
        self.recent = recent
        self.time_axis = time_axis
        self.thresholds = thresholds
        self.max_assets = max_assets
        self.attribution = attribution
        # (low, high) by ticker, ANY_ASSET for the rest; `thresholds` when neither is there.
        self.asset_thresholds = dict(asset_thresholds or {})
        self._lock = threading.Lock()
        self._all = _View(recent)
        self._assets: OrderedDict[str, _View] = OrderedDict()
        self._alert_ids = SeenAlerts(alert_horizon_s)
        self._newest_alert_end: float | None = None
        self.invalid = 0
        self.version = 0
        self.last_record_at: float | None = None

    # Totals of the all-assets view, for /healthz and tests.
    @property
    def records(self) -> int:
        return self._all.records

    @property
    def classified(self) -> int:
        return self._all.classified

    @property
    def alert_count(self) -> int:
        return self._all.alert_count

    @property
    def assets(self) -> list[str]:
        with self._lock:
            return list(self._assets)

    def _when(self, rec: SentimentOut) -> float:
        if self.time_axis == "event" and rec.event_time is not None:
            return _epoch(rec.event_time)
        return _epoch(rec.processed_time)

    def _asset_view(self, asset: str) -> _View:
        view = self._assets.get(asset)
        if view is None:
            if len(self._assets) >= self.max_assets:
                self._assets.popitem(last=False)
            view = self._assets[asset] = _View(self.recent)
        else:
            self._assets.move_to_end(asset)
        return view

    def add_record(self, rec: SentimentOut) -> None:
        start = int(self._when(rec) // self.bucket_s) * self.bucket_s
        tweet = {
            "id": rec.id,
            "label": rec.label.value if rec.label else None,
            "p_positive": rec.p_positive,
            "text": rec.text,
            "assets": rec.assets,
            "event_time": rec.event_time.isoformat() if rec.event_time else None,
            "processed_time": rec.processed_time.isoformat(),
            "model_version": rec.model_version,
        }
        named = rec.assets[:1] if self.attribution == "primary" else list(dict.fromkeys(rec.assets))
        with self._lock:
            self.last_record_at = _epoch(rec.processed_time)
            self._all.add(rec, start, self.max_points, tweet)
            for asset in named:
                self._asset_view(asset).add(rec, start, self.max_points, tweet)
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
            dumped = alert.model_dump(mode="json")
            views = [self._all]
            if alert.asset is not None:
                views.append(self._asset_view(alert.asset))
            for view in views:
                view.alert_count += 1
                view.alerts.appendleft(dumped)
            self.version += 1

    @property
    def known_alert_ids(self) -> int:
        return len(self._alert_ids)

    def note_invalid(self) -> None:
        with self._lock:
            self.invalid += 1

    def thresholds_for(self, asset: str | None) -> tuple[float, float]:
        if asset is None:
            return self.thresholds
        found = self.asset_thresholds.get(asset) or self.asset_thresholds.get(ANY_ASSET)
        return found if found is not None else self.thresholds

    def snapshot(self, asset: str | None = None) -> dict[str, Any]:
        """The view of `asset` (None: all assets); an asset not (or no longer) tracked gives an
        empty view, so a page that asks for it shows nothing rather than an error."""
        with self._lock:
            view = self._all if asset is None else self._assets.get(asset, _View(0))
            starts = sorted(view.buckets)
            buckets = [view.buckets[s] for s in starts]
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
            low, high = self.thresholds_for(asset)
            assets = sorted(self._assets.items(), key=lambda kv: (-kv[1].classified, kv[0]))
            return {
                "version": self.version,
                "asset": asset,
                "assets": [
                    {
                        "asset": name,
                        "records": v.records,
                        "classified": v.classified,
                        "bullish_ratio": v.bullish_ratio,
                    }
                    for name, v in assets
                ],
                "attribution": self.attribution,
                "time_axis": self.time_axis,
                "bucket_s": self.bucket_s,
                "rolling_s": self.rolling_s,
                "thresholds": {"low": low, "high": high},
                "totals": {
                    "records": view.records,
                    "classified": view.classified,
                    "positive": view.positive,
                    "skipped": view.skipped,
                    "invalid": self.invalid,
                    "bullish_ratio": view.bullish_ratio,
                    "alerts": view.alert_count,
                },
                "series": {
                    "t": starts,
                    "ratio": ratio,
                    "bucket_ratio": bucket_ratio,
                    "volume": [b.classified for b in buckets],
                    "skipped": [b.skipped for b in buckets],
                },
                "tweets": list(view.tweets),
                "alerts": list(view.alerts),
                "last_record_at": self.last_record_at,
            }
