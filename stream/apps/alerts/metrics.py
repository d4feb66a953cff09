"""What `cryptosent alerts` counts: plain counters for tests and logs, Prometheus for operators."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

# The ids of the most recent fired alerts kept in `AlertsStats`: enough to inspect a test run or
# the last hour of a busy stream, and a fixed bound on a service that runs for months.
RECENT_FIRED_IDS = 256
# The `asset` label of the all-assets series on the per-window gauges.
ALL_ASSETS = "all"


@dataclass
class AlertsStats:
    """Counters of one service instance, for tests and logs (Prometheus has the same)."""

    consumed: int = 0
    counted: int = 0
    before_lookback: int = 0
    invalid: int = 0
    # Second and later copies of an input fanned out per asset (stream.output_key), not counted.
    fanout_copies: int = 0
    dropped_late: int = 0
    windows_closed: int = 0
    fired: int = 0
    suppressed_replay: int = 0
    suppressed_duplicate: int = 0
    held_during_replay: int = 0
    assignments: int = 0
    replaying: bool = True
    watermark: float | None = None
    # The assets with a series of their own now (pinned and top N).
    assets: list[str] = field(default_factory=list)
    # Oldest first; the oldest are dropped past RECENT_FIRED_IDS (`fired` counts them all).
    fired_ids: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_FIRED_IDS))


class AlertsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
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
            ["window_s", "asset"],
            registry=registry,
        )
        self.volume = Gauge(
            "cryptosent_alerts_window_volume",
            "Classified records in the last closed window",
            ["window_s", "asset"],
            registry=registry,
        )
        self.watermark = Gauge(
            "cryptosent_alerts_watermark_seconds",
            "Event-time watermark (epoch seconds)",
            registry=registry,
        )
        self.known_ids = Gauge(
            "cryptosent_alerts_known_ids",
            "Alert ids remembered for de-duplication (bounded by the window horizon)",
            registry=registry,
        )

    def forget_assets(self, assets: Iterable[str], windows_s: Iterable[int]) -> None:
        """Drop the gauges of assets no longer tracked: the label set stays bounded."""
        for asset in assets:
            for w in windows_s:
                for gauge in (self.ratio, self.volume):
                    with contextlib.suppress(KeyError):
                        gauge.remove(str(w), asset)
