"""The `Alert` record published by `cryptosent alerts` (owned by the downstream issue)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from schemas.messages import SCHEMA_VERSION


class AlertKind(StrEnum):
    THRESHOLD_CROSSED = "threshold_crossed"
    ZSCORE = "zscore"
    VOLUME_SPIKE = "volume_spike"


class Alert(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    alert_id: str
    kind: AlertKind
    window_s: int = Field(gt=0)
    window_start: datetime
    window_end: datetime
    bullish_ratio: float | None = Field(default=None, ge=0, le=1)
    mean_p_positive: float | None = Field(default=None, ge=0, le=1)
    volume: int = Field(ge=0)
    skipped: int = Field(ge=0)
    message: str
    emitted_at: datetime
