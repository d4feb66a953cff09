"""What every settings section shares: the value types and the strict base class."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
ProcessingGuarantee = Literal["at_least_once", "exactly_once"]
# The Kafka key of a SentimentOut: the tweet id (one record per input), its primary asset, or one
# record per asset keyed by that asset (docs/operations.md, "Output keying").
OutputKey = Literal["tweet_id", "primary_asset", "asset_fanout"]
# Which runtime serves an artifact; `auto` = torch on a GPU, else the artifact's gated ONNX file.
BackendChoice = Literal["torch", "onnx", "onnx-int8", "auto"]

_SECRET_HINTS = ("password", "secret", "token", "key.pem", "sasl.oauthbearer.config")


def _split_csv(value: Any) -> Any:
    """Accept `a,b` as well as a JSON list for list-valued settings given in the environment."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            import json

            return json.loads(stripped)
        return [part.strip() for part in stripped.split(",") if part.strip()]
    return value


def _first(*values: float | None) -> float:
    """The first value that is set; the last argument is always set."""
    return next(v for v in values if v is not None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
