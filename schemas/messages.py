"""The records that cross Kafka. Downstream services code against these (and the exported JSON
Schema files under `schemas/json/`), so changes here are API changes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Version 1: the first records. Version 2 added `SentimentOut.assets` / `asset_map_version` and
# `Alert.asset`, both optional with defaults, so a v2 reader reads v1 records unchanged; a record
# says which version wrote it. DeadLetter did not change and stays at 1.
SCHEMA_VERSION = 2
DEAD_LETTER_SCHEMA_VERSION = 1


class Label(StrEnum):
    NEGATIVE = "NEGATIVE"
    POSITIVE = "POSITIVE"


class Status(StrEnum):
    CLASSIFIED = "classified"
    SKIPPED = "skipped"


class SkipReason(StrEnum):
    NON_ENGLISH = "non_english"
    EMPTY_AFTER_CLEANING = "empty_after_cleaning"
    TOO_SHORT = "too_short"


class DeadLetterKind(StrEnum):
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    OVERSIZED = "oversized"
    INTERNAL_ERROR = "internal_error"


Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class SourceRef(_Record):
    """Where an input message came from; lets consumers join outputs back to inputs."""

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


class TweetIn(_Record):
    """A tweet as the stream accepts it, after the configured field paths were resolved.

    Producers send any JSON object; `stream.input_format` names the dotted paths of the id, text,
    created_at and (optional, for live scoring) label fields. `replay` writes this shape directly.
    """

    id: Annotated[str, Field(min_length=1, max_length=256)]
    text: str
    created_at: datetime | None = None
    # A reference label carried through from labeled replays so downstream can score live accuracy.
    label: Label | None = None


class SentimentOut(_Record):
    """One per input message that was not dead-lettered, keyed by tweet id on the output topic."""

    schema_version: int = SCHEMA_VERSION
    id: str
    status: Status
    label: Label | None = None
    p_negative: Probability | None = None
    p_positive: Probability | None = None
    skip_reason: SkipReason | None = None
    language: str | None = None
    model_version: str
    source: SourceRef
    event_time: datetime | None = None
    processed_time: datetime
    text: str | None = None
    reference_label: Label | None = None
    # Canonical tickers the raw text names (cashtags, names, aliases), primary first; empty when
    # it names none. Extracted for skipped records too: "which coin" does not need a label.
    assets: list[str] = Field(default_factory=list)
    # The asset map those tickers came from (`version` of the map file), null before v2.
    asset_map_version: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SentimentOut:
        if self.status is Status.CLASSIFIED:
            if self.label is None or self.p_negative is None or self.p_positive is None:
                raise ValueError("a classified record needs a label and both probabilities")
            if self.skip_reason is not None:
                raise ValueError("a classified record has no skip_reason")
            if abs(self.p_negative + self.p_positive - 1.0) > 1e-3:
                raise ValueError("p_negative and p_positive must sum to 1")
        else:
            if self.skip_reason is None:
                raise ValueError("a skipped record needs a skip_reason")
            if self.label is not None:
                raise ValueError("a skipped record has no label")
        return self


class DeadLetter(_Record):
    """An input the stream could not turn into a tweet; the original payload is kept verbatim."""

    schema_version: int = DEAD_LETTER_SCHEMA_VERSION
    error_kind: DeadLetterKind
    error_message: str
    # The payload as text when it decoded as UTF-8, otherwise base64 of the raw bytes.
    payload_text: str | None = None
    payload_base64: str | None = None
    key: str | None = None
    source: SourceRef
    dead_lettered_at: datetime

    @model_validator(mode="after")
    def _one_payload(self) -> DeadLetter:
        if (self.payload_text is None) == (self.payload_base64 is None):
            raise ValueError("exactly one of payload_text and payload_base64 is set")
        return self
