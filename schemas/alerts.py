"""The `Alert` record published by `cryptosent alerts` on the alerts topic.

Keyed by `alert_id` on the topic. The id is a pure function of (asset, kind, window_s,
window_start), so an alert re-published after a crash carries the same id and a consumer can drop
the copy.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from schemas.messages import SCHEMA_VERSION


class AlertKind(StrEnum):
    # The bullish ratio of a closed window is past bullish_threshold_high (direction up) or
    # bullish_threshold_low (down) while the previous qualifying window was not.
    THRESHOLD_CROSSED = "threshold_crossed"
    # The bullish ratio is more than zscore_k trailing standard deviations from the trailing mean.
    ZSCORE = "zscore"
    # The window's volume is more than volume_spike_factor times the trailing mean volume.
    VOLUME_SPIKE = "volume_spike"


class AlertDirection(StrEnum):
    UP = "up"
    DOWN = "down"


class Alert(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    alert_id: str = Field(description="hash of (asset, kind, window_s, window_start): dedupe on it")
    asset: str | None = Field(
        default=None,
        description="canonical ticker (e.g. ETH) of a per-asset index; null = all assets",
    )
    kind: AlertKind
    direction: AlertDirection
    window_s: int = Field(gt=0, description="window length in seconds")
    window_start: datetime = Field(description="inclusive, event time, aligned to the epoch")
    window_end: datetime = Field(description="exclusive")
    bullish_ratio: float | None = Field(
        default=None, ge=0, le=1, description="classified POSITIVE / classified; null if none"
    )
    mean_p_positive: float | None = Field(default=None, ge=0, le=1)
    volume: int = Field(ge=0, description="classified records in the window")
    skipped: int = Field(ge=0, description="skipped records in the window")
    value: float = Field(description="what the rule measured: the ratio, or the volume")
    baseline: float = Field(
        description="what it was compared with: the crossed threshold, or the trailing mean"
    )
    zscore: float | None = Field(default=None, description="only for kind=zscore")
    message: str
    emitted_at: datetime
