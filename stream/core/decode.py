"""Bytes from Kafka -> a `TweetIn`, or the dead letter that says why not. Pure: the shell passes
the message's timestamp in (`ops.kafka.message_timestamp_ms` knows librdkafka's "no timestamp"
marker) and the time of decoding.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from ops.settings import InputFormat
from schemas.messages import DeadLetterKind, Label, SourceRef, TweetIn
from stream.core.records import Inbound, make_dead_letter

_ID_MAX_CHARS = 256


class KafkaMessage(Protocol):
    """The part of `confluent_kafka.Message` the core reads."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> str | bytes | None: ...
    def value(self) -> str | bytes | None: ...


class _InvalidError(Exception):
    def __init__(self, kind: DeadLetterKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


_MISSING: Any = object()


def get_path(obj: Any, path: str) -> Any:
    """Resolve a dotted path (`data.text`, `entities.0.id`) in decoded JSON; `_MISSING` when any
    step is absent. A top-level key that itself contains dots wins, so `{"data.text": ...}`
    works as well as `{"data": {"text": ...}}`."""
    if isinstance(obj, dict) and path in obj:
        return obj[path]
    current = obj
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def _as_bytes(value: str | bytes | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return value.encode("utf-8")


def parse_event_time(value: Any) -> datetime | None:
    """ISO 8601 (`2022-06-25T14:09:10Z`), Twitter v1 (`Wed Oct 10 20:19:24 +0000 2018`) or epoch
    seconds/milliseconds; naive times are taken as UTC. Raises ValueError/TypeError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("a boolean is not a timestamp")
    if isinstance(value, int | float):
        seconds = float(value) / 1000.0 if abs(value) > 1e11 else float(value)
        return datetime.fromtimestamp(seconds, tz=UTC)
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            parsed = datetime.strptime(text, "%a %b %d %H:%M:%S %z %Y")
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    raise TypeError(f"expected a string or a number, got {type(value).__name__}")


_LABEL_WORDS = {
    "positive": Label.POSITIVE,
    "bullish": Label.POSITIVE,
    "negative": Label.NEGATIVE,
    "bearish": Label.NEGATIVE,
}


def parse_label(value: Any) -> Label | None:
    """A reference label is optional side information: anything unrecognised (Neutral, null,
    a number) means "no label" rather than a dead letter."""
    if isinstance(value, str):
        return _LABEL_WORDS.get(value.strip().lower())
    return None


def _surrogate_at(value: str) -> int | None:
    """Index of the first lone surrogate (`"\\ud800"` escapes decode to one), else None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _check_encodable(value: str, what: str) -> None:
    # A JSON `\udXXX` escape without its pair is valid JSON syntax, but it decodes to a code point
    # that UTF-8 cannot carry (RFC 3629), so no output naming this text could be written. The
    # payload bytes themselves are valid UTF-8; the *decoded* text is not, hence `invalid_utf8`.
    at = _surrogate_at(value)
    if at is not None:
        raise _InvalidError(
            DeadLetterKind.INVALID_UTF8,
            f"{what} holds a lone UTF-16 surrogate escape at character {at} "
            f"(U+{ord(value[at]):04X}), which UTF-8 cannot encode",
        )


def _validate(raw: bytes | None, fmt: InputFormat, max_bytes: int) -> TweetIn:
    if raw is None:
        raise _InvalidError(DeadLetterKind.INVALID_JSON, "message has no value (null payload)")
    if len(raw) > max_bytes:
        raise _InvalidError(
            DeadLetterKind.OVERSIZED,
            f"payload is {len(raw)} bytes, over stream.max_message_bytes={max_bytes} "
            f"(payload kept truncated to {max_bytes} bytes)",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _InvalidError(
            DeadLetterKind.INVALID_UTF8, f"payload is not valid UTF-8: {exc}"
        ) from None
    try:
        obj = json.loads(text.lstrip("\ufeff"))
    except RecursionError:
        raise _InvalidError(
            DeadLetterKind.INVALID_JSON, "invalid JSON: nested too deeply"
        ) from None
    except ValueError as exc:
        raise _InvalidError(DeadLetterKind.INVALID_JSON, f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise _InvalidError(
            DeadLetterKind.NOT_AN_OBJECT, f"payload is a JSON {type(obj).__name__}, not an object"
        )

    raw_id = get_path(obj, fmt.id_field)
    if raw_id is _MISSING or raw_id is None:
        raise _InvalidError(DeadLetterKind.MISSING_FIELD, f"missing id field {fmt.id_field!r}")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        raise _InvalidError(
            DeadLetterKind.WRONG_TYPE,
            f"id field {fmt.id_field!r} must be a string or an integer, "
            f"got {type(raw_id).__name__}",
        )
    tweet_id = str(raw_id)
    if not tweet_id or len(tweet_id) > _ID_MAX_CHARS:
        raise _InvalidError(
            DeadLetterKind.WRONG_TYPE,
            f"id field {fmt.id_field!r} must have 1 to {_ID_MAX_CHARS} characters",
        )
    _check_encodable(tweet_id, f"id field {fmt.id_field!r}")

    raw_text = get_path(obj, fmt.text_field)
    if raw_text is _MISSING or raw_text is None:
        raise _InvalidError(DeadLetterKind.MISSING_FIELD, f"missing text field {fmt.text_field!r}")
    if not isinstance(raw_text, str):
        raise _InvalidError(
            DeadLetterKind.WRONG_TYPE,
            f"text field {fmt.text_field!r} must be a string, got {type(raw_text).__name__}",
        )
    _check_encodable(raw_text, f"text field {fmt.text_field!r}")

    raw_created = get_path(obj, fmt.created_at_field)
    try:
        created_at = None if raw_created is _MISSING else parse_event_time(raw_created)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise _InvalidError(
            DeadLetterKind.WRONG_TYPE,
            f"created_at field {fmt.created_at_field!r} is not a timestamp: {exc}",
        ) from None

    raw_label = get_path(obj, fmt.label_field)
    label = None if raw_label is _MISSING else parse_label(raw_label)
    try:
        return TweetIn(id=tweet_id, text=raw_text, created_at=created_at, label=label)
    except ValidationError as exc:  # defensive: the checks above should make this unreachable
        raise _InvalidError(
            DeadLetterKind.WRONG_TYPE, f"invalid tweet: {exc.errors()[0]['msg']}"
        ) from None


def decode_message(
    msg: KafkaMessage,
    fmt: InputFormat,
    max_bytes: int,
    now: datetime | None = None,
    *,
    timestamp_ms: int | None,
) -> Inbound:
    """Bytes -> `TweetIn`, or the `DeadLetter` that says why not. Never raises for any payload.
    `timestamp_ms` is the message's Kafka timestamp, None when the broker gave none."""
    source = SourceRef(
        topic=msg.topic() or "", partition=msg.partition() or 0, offset=msg.offset() or 0
    )
    key = _as_bytes(msg.key())
    kafka_ts = timestamp_ms if timestamp_ms is not None and timestamp_ms >= 0 else None
    raw = _as_bytes(msg.value())
    try:
        tweet = _validate(raw, fmt, max_bytes)
    except _InvalidError as bad:
        letter = make_dead_letter(
            bad.kind,
            bad.message,
            source=source,
            key=key,
            payload=b"" if raw is None else raw[:max_bytes],
            truncated=raw is not None and len(raw) > max_bytes,
            now=now,
        )
        return Inbound(source=source, key=key, kafka_timestamp_ms=kafka_ts, dead_letter=letter)
    return Inbound(source=source, key=key, kafka_timestamp_ms=kafka_ts, tweet=tweet)
