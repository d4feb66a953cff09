"""What the stream writes: one `OutRecord` per input, a `SentimentOut` or a `DeadLetter`.

Every dead letter, whether decided at decode time, by a failing step or by an output too large for
the producer, is built by `make_dead_letter`; `Outcome` tells the shell how to count and log it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from ops.settings import OutputKey
from schemas.messages import (
    DeadLetter,
    DeadLetterKind,
    Label,
    SentimentOut,
    SkipReason,
    SourceRef,
    Status,
    TweetIn,
)
from stream.core.offsets import TopicPartitionKey


class CleanResultLike(Protocol):
    """What `stream.core.text.TextPipeline.process_batch` returns per text."""

    @property
    def text(self) -> str | None: ...
    @property
    def skip_reason(self) -> SkipReason | None: ...
    @property
    def language(self) -> str | None: ...
    @property
    def kept(self) -> bool: ...


class TextPipelineLike(Protocol):
    def process_batch(self, texts: list[str]) -> Sequence[CleanResultLike]: ...


@dataclass(frozen=True, slots=True)
class Inbound:
    """One consumed message after decoding: exactly one of `tweet` / `dead_letter` is set."""

    source: SourceRef
    key: bytes | None
    kafka_timestamp_ms: int | None
    tweet: TweetIn | None = None
    dead_letter: DeadLetter | None = None

    @property
    def tp(self) -> TopicPartitionKey:
        return (self.source.topic, self.source.partition)

    @property
    def offset(self) -> int:
        return self.source.offset


class Outcome(StrEnum):
    """What an output record says about its input (for counting and logging)."""

    CLASSIFIED = "classified"
    SKIPPED = "skipped"
    DEAD_LETTER = "dead_letter"
    # The output for a valid input exceeded the producer's message.max.bytes and was replaced by
    # a dead letter on the way out.
    TOO_LARGE = "too_large"

    @property
    def is_dead_letter(self) -> bool:
        return self in (Outcome.DEAD_LETTER, Outcome.TOO_LARGE)


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One record to produce, tied back to the input it answers."""

    topic: str
    key: bytes | None
    value: bytes
    source: SourceRef
    kafka_timestamp_ms: int | None
    outcome: Outcome
    # The label, skip reason or dead-letter kind (a metrics label).
    detail: str
    # A dead letter's error message, for the one log line every dead letter gets.
    reason: str = ""
    # A second or later record of an input fanned out per asset: delivered like any record, but
    # the input's outcome is counted once, on its first record.
    fanout_copy: bool = False

    @property
    def tp(self) -> TopicPartitionKey:
        return (self.source.topic, self.source.partition)


def _payload_fields(raw: bytes, truncated: bool) -> dict[str, str]:
    # A truncated payload may end inside a multi-byte character: up to 3 bytes are trimmed for
    # that, and only then; any other undecodable payload is kept byte for byte as base64.
    for cut in range(min(3, len(raw)) + 1 if truncated else 1):
        try:
            return {"payload_text": raw[: len(raw) - cut].decode("utf-8")}
        except UnicodeDecodeError:
            continue
    return {"payload_base64": base64.b64encode(raw).decode("ascii")}


def _encodable(text: str) -> str:
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def make_dead_letter(
    kind: DeadLetterKind,
    message: str,
    *,
    source: SourceRef,
    key: bytes | None,
    payload: bytes,
    truncated: bool = False,
    now: datetime | None = None,
) -> DeadLetter:
    """The one way a dead letter is built: the payload as text when it decodes, base64 when not."""
    return DeadLetter(
        error_kind=kind,
        # A message may quote input text; a lone surrogate in it must not make the dead letter
        # itself unwritable.
        error_message=_encodable(message[:1000]),
        key=None if key is None else key.decode("utf-8", errors="replace"),
        source=source,
        dead_lettered_at=now or datetime.now(UTC),
        **_payload_fields(payload, truncated),
    )


def internal_error(item: Inbound, message: str, now: datetime | None = None) -> Inbound:
    """Turn an item whose processing failed (a pipeline or model bug on this one input) into a
    dead letter, so the input still gets exactly one output and the stream goes on."""
    if item.dead_letter is not None:
        return item
    payload = b"" if item.tweet is None else _tweet_json(item.tweet)
    letter = make_dead_letter(
        DeadLetterKind.INTERNAL_ERROR,
        message,
        source=item.source,
        key=item.key,
        payload=payload,
        now=now,
    )
    return replace_with_dead_letter(item, letter)


def _tweet_json(tweet: TweetIn) -> bytes:
    try:
        return tweet.model_dump_json().encode("utf-8")
    except ValueError:
        # ensure_ascii writes what UTF-8 cannot carry (a lone surrogate) as a JSON escape.
        return json.dumps(tweet.model_dump(mode="json"), ensure_ascii=True).encode("ascii")


def replace_with_dead_letter(item: Inbound, letter: DeadLetter) -> Inbound:
    return Inbound(
        source=item.source,
        key=item.key,
        kafka_timestamp_ms=item.kafka_timestamp_ms,
        dead_letter=letter,
    )


def sentiment_record(
    item: Inbound,
    clean: CleanResultLike,
    probs: Sequence[float] | None,
    *,
    labels: Sequence[Label],
    model_version: str,
    include_text: bool,
    processed_time: datetime,
    assets: Sequence[str] = (),
    asset_map_version: str | None = None,
) -> SentimentOut:
    """The output for a tweet: classified when the pipeline kept it and `probs` (one per label,
    in `labels` order) exist, skipped with the pipeline's reason otherwise. `assets` (primary
    first) and the map's version go into both."""
    tweet = item.tweet
    if tweet is None:
        raise ValueError("sentiment_record needs a decoded tweet")
    event_time = tweet.created_at
    if event_time is None and item.kafka_timestamp_ms is not None:
        event_time = datetime.fromtimestamp(item.kafka_timestamp_ms / 1000.0, tz=UTC)
    common: dict[str, Any] = {
        "id": tweet.id,
        "language": clean.language,
        "model_version": model_version,
        "source": item.source,
        "event_time": event_time,
        "processed_time": processed_time,
        "text": tweet.text if include_text else None,
        "reference_label": tweet.label,
        "assets": list(assets),
        "asset_map_version": asset_map_version,
    }
    if clean.kept and clean.text and probs is not None:
        best = max(range(len(labels)), key=lambda i: probs[i])
        p_pos = float(probs[labels.index(Label.POSITIVE)])
        p_neg = float(probs[labels.index(Label.NEGATIVE)])
        return SentimentOut(
            status=Status.CLASSIFIED,
            label=labels[best],
            p_positive=min(max(p_pos, 0.0), 1.0),
            p_negative=min(max(p_neg, 0.0), 1.0),
            **common,
        )
    # A kept result with nothing left to classify is reported as empty rather than dropped.
    reason = clean.skip_reason or SkipReason.EMPTY_AFTER_CLEANING
    return SentimentOut(status=Status.SKIPPED, skip_reason=reason, **common)


def to_out_record(
    item: Inbound,
    value: SentimentOut | DeadLetter,
    topic: str,
    *,
    dead_letter_topic: str | None = None,
    now: datetime | None = None,
) -> OutRecord:
    """The record for `value`. An output that cannot be serialized (pydantic refuses it) becomes
    an `internal_error` dead letter on `dead_letter_topic` (default: `topic`) instead of an
    exception: one bad record must never stop the stream."""
    try:
        return _out_record(item, value, topic)
    except ValueError as exc:  # PydanticSerializationError is a ValueError
        message = f"cannot serialize the output record: {exc}"
    bad = internal_error(item, message, now) if item.dead_letter is None else item
    letter = bad.dead_letter
    if letter is None or letter is value:
        letter = _bare_internal_error(item, message, now)
    try:
        return _out_record(bad, letter, dead_letter_topic or topic)
    except ValueError:
        bare = _bare_internal_error(item, message, now)
        return _out_record(replace_with_dead_letter(item, bare), bare, dead_letter_topic or topic)


def _bare_internal_error(item: Inbound, message: str, now: datetime | None) -> DeadLetter:
    """A dead letter with nothing of the input but its source and key: always writable."""
    return make_dead_letter(
        DeadLetterKind.INTERNAL_ERROR,
        message,
        source=item.source,
        key=item.key,
        payload=b"",
        now=now,
    )


def _out_record(item: Inbound, value: SentimentOut | DeadLetter, topic: str) -> OutRecord:
    key: bytes | None
    reason = ""
    if isinstance(value, SentimentOut):
        key = value.id.encode("utf-8")
        if value.status is Status.CLASSIFIED:
            outcome, detail = Outcome.CLASSIFIED, str(value.label)
        else:
            outcome, detail = Outcome.SKIPPED, str(value.skip_reason)
    else:
        key = item.key
        outcome, detail, reason = Outcome.DEAD_LETTER, str(value.error_kind), value.error_message
    return OutRecord(
        topic=topic,
        key=key,
        value=value.model_dump_json().encode("utf-8"),
        source=item.source,
        kafka_timestamp_ms=item.kafka_timestamp_ms,
        outcome=outcome,
        detail=detail,
        reason=reason,
    )


def keyed_records(
    record: OutRecord, assets: Sequence[str], output_key: OutputKey
) -> list[OutRecord]:
    """A SentimentOut record re-keyed by `output_key`: `tweet_id`
    leaves it; `primary_asset` keys it by `assets[0]`; `asset_fanout` makes one record per
    asset, each keyed by its asset, with the same value. A record without assets keeps its tweet
    id key in every mode, so every input still has an output (and no-asset posts do not all land
    on one partition)."""
    if output_key == "tweet_id" or not assets:
        return [record]
    if output_key == "primary_asset":
        return [dataclasses.replace(record, key=assets[0].encode("utf-8"))]
    return [
        dataclasses.replace(record, key=asset.encode("utf-8"), fanout_copy=n > 0)
        for n, asset in enumerate(assets)
    ]


def wanted(
    record: SentimentOut, key: str | None, assets: frozenset[str] | None, output_key: OutputKey
) -> bool:
    """Whether a subscriber for `assets` (None: every record) keeps this record, so that each
    input is kept once even when the stream fans it out per asset."""
    if assets is None:
        # A fanned-out input: keep its primary-asset copy (a no-asset post is keyed by its id).
        return output_key != "asset_fanout" or not record.assets or key == record.assets[0]
    first = next((a for a in record.assets if a in assets), None)
    if first is None:
        return False
    return output_key != "asset_fanout" or key == first


def too_large_record(
    record: OutRecord, dead_letter_topic: str, now: datetime | None = None
) -> OutRecord:
    """The dead letter that replaces an output the producer refused as too large. The input is
    not repeated in it (it would be too large too): the source reference points at it."""
    letter = make_dead_letter(
        DeadLetterKind.OVERSIZED,
        f"the output record ({len(record.value)} bytes) exceeds the producer's "
        "message.max.bytes; the input is not repeated here, see the source reference",
        source=record.source,
        key=record.key,
        payload=b"",
        now=now,
    )
    return OutRecord(
        topic=dead_letter_topic,
        key=record.key,
        value=letter.model_dump_json().encode("utf-8"),
        source=record.source,
        kafka_timestamp_ms=record.kafka_timestamp_ms,
        outcome=Outcome.TOO_LARGE,
        detail=str(DeadLetterKind.OVERSIZED),
        reason="output too large",
        fanout_copy=record.fanout_copy,
    )
