"""Sections of the downstream apps: `alerts` (with per-asset rules), `dashboard`, `demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from ops.settings.base import _first, _Section, _split_csv


class AssetRuleOverrides(_Section):
    """Rule settings of the per-asset indexes that differ from the all-assets ones (unset =
    inherited). A quieter coin needs a lower `min_volume` than the whole stream."""

    bullish_threshold_high: float | None = Field(default=None, ge=0, le=1)
    bullish_threshold_low: float | None = Field(default=None, ge=0, le=1)
    zscore_k: float | None = Field(default=None, gt=0)
    volume_spike_factor: float | None = Field(default=None, gt=1)
    min_volume: int | None = Field(default=None, ge=1)


# Per-asset series (pinned + top_n) one alerts instance may keep: each costs a few windows and
# `trailing_windows` of history per window length, so this bounds memory and alert volume.
MAX_ASSET_INDEXES = 200


class AssetAlertsSettings(_Section):
    """`alerts.assets`: which assets get their own rolling index and rules beside the
    all-assets one. See docs/operations.md, "Per-asset alerts"."""

    # Always indexed, e.g. BTC,ETH,SOL (canonical tickers of the asset map).
    tickers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Up to this many other assets, the most mentioned ones (re-ranked every longest window).
    top_n: int = Field(default=5, ge=0, le=MAX_ASSET_INDEXES)
    # A record counts for its primary asset only (the per-asset volumes then add up to the
    # all-assets volume of records that name an asset), or for every asset it names.
    attribution: Literal["primary", "every"] = "primary"
    # Rule overrides by ticker; "*" applies to every asset, a ticker's own entry on top of it.
    rules: dict[str, AssetRuleOverrides] = Field(default_factory=dict)

    _split = field_validator("tickers", mode="before")(_split_csv)

    @field_validator("tickers")
    @classmethod
    def _canonical(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(t.strip().upper() for t in value if t.strip()))

    @field_validator("rules")
    @classmethod
    def _canonical_keys(cls, value: dict[str, AssetRuleOverrides]) -> dict[str, AssetRuleOverrides]:
        return {k.strip().upper(): v for k, v in value.items()}

    @model_validator(mode="after")
    def _bounded(self) -> AssetAlertsSettings:
        if len(self.tickers) + self.top_n > MAX_ASSET_INDEXES:
            raise ValueError(f"len(tickers) + top_n must not exceed {MAX_ASSET_INDEXES}")
        return self


class AlertsSettings(_Section):
    """`cryptosent alerts`: tumbling event-time windows over the output topic and the rules that
    turn a closed window into an `Alert`. See docs/operations.md for the semantics."""

    group_id: str = "cryptosent-alerts"
    # Tumbling windows aligned to the epoch, one index per length.
    windows_s: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [60, 900])
    # A window closes once the watermark (max event time seen - this) passes its end; records
    # for a closed window are counted as dropped-late.
    allowed_lateness_s: float = Field(default=30.0, ge=0)
    bullish_threshold_high: float = Field(default=0.7, ge=0, le=1)
    bullish_threshold_low: float = Field(default=0.3, ge=0, le=1)
    zscore_k: float = Field(default=3.0, gt=0)
    # A floor under the trailing standard deviation: a perfectly flat history would otherwise
    # turn the smallest wobble into an infinite z-score.
    zscore_min_std: float = Field(default=0.02, ge=0, le=1)
    trailing_windows: int = Field(default=20, ge=2)
    # The z-score and volume rules stay quiet until this many windows of history exist.
    min_trailing_windows: int = Field(default=5, ge=2)
    volume_spike_factor: float = Field(default=3.0, gt=1)
    # Windows with fewer classified records are not judged on their ratio (too noisy).
    min_volume: int = Field(default=10, ge=1)
    # On (re)start, records produced this long ago or later are re-read to rebuild the windows.
    lookback_s: float = Field(default=3600.0, ge=0)
    commit_interval_s: float = Field(default=5.0, gt=0)
    session_timeout_ms: int = Field(default=45_000, ge=1_000)
    # Prometheus endpoint of the alerts service; None = no endpoint.
    metrics_host: str = "0.0.0.0"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    assets: AssetAlertsSettings = Field(default_factory=AssetAlertsSettings)

    _split = field_validator("windows_s", mode="before")(_split_csv)

    @field_validator("windows_s")
    @classmethod
    def _positive_unique(cls, value: list[int]) -> list[int]:
        if not value or any(w <= 0 for w in value):
            raise ValueError("windows_s needs at least one positive window length")
        return sorted(set(value))

    @model_validator(mode="after")
    def _history_fits(self) -> AlertsSettings:
        if self.min_trailing_windows > self.trailing_windows:
            raise ValueError("min_trailing_windows must not exceed trailing_windows")
        default = self.assets.rules.get("*", AssetRuleOverrides())
        for ticker, own in self.assets.rules.items():
            high = _first(
                own.bullish_threshold_high,
                default.bullish_threshold_high,
                self.bullish_threshold_high,
            )
            low = _first(
                own.bullish_threshold_low, default.bullish_threshold_low, self.bullish_threshold_low
            )
            if low >= high:
                raise ValueError(
                    f"alerts.assets.rules[{ticker}]: bullish_threshold_low must be below "
                    "bullish_threshold_high"
                )
        return self


class DashboardSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8050, ge=0, le=65535)  # 0 picks a free port
    # Only names the client: the dashboard assigns itself every partition and never commits, so
    # each replica shows everything.
    group_id: str = "cryptosent-dashboard"
    recent: int = Field(default=50, ge=1, le=1000)
    # On start, records produced this long ago or later are read to fill the page.
    lookback_s: float = Field(default=900.0, ge=0)
    # The chart's x axis: when the tweet was written (event time, processed time when absent)
    # or when the stream classified it (a live view of a replay of old tweets).
    time_axis: Literal["event", "processed"] = "processed"
    bucket_s: int = Field(default=5, ge=1, le=86_400)
    # The plotted bullish ratio is over this trailing span of buckets.
    rolling_s: int = Field(default=60, ge=1, le=86_400)
    max_points: int = Field(default=360, ge=10, le=10_000)
    push_interval_s: float = Field(default=1.0, gt=0, le=60)
    # Assets with a view of their own (the selector); past it, the least recently active one
    # makes room. Records count for assets as `alerts.assets.attribution` says.
    max_assets: int = Field(default=20, ge=1, le=200)


class DemoSettings(_Section):
    replay_csv: Path | None = None
    limit: int = Field(default=2000, ge=1)
    rate: float = Field(default=200.0, gt=0)
