"""The pure core of `serve`: no Kafka client, no model, no threads, no clock of its own.

Everything here takes plain values (a `KafkaMessage` is anything with the six accessor methods of
a confluent-kafka `Message`) so the decisions that matter for correctness (what is a dead letter,
what goes into an output record, which offset is safe to commit, when a micro-batch closes) are
unit-tested with fakes. `stream.consumer` is the thin Kafka shell around it.
"""

from __future__ import annotations

import base64
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from pydantic import ValidationError

from ops.settings import InputFormat
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

TopicPartitionKey = tuple[str, int]

# confluent-kafka's TIMESTAMP_NOT_AVAILABLE; repeated so the core does not import the client.
TIMESTAMP_NOT_AVAILABLE = 0
_ID_MAX_CHARS = 256


class KafkaMessage(Protocol):
    """The part of `confluent_kafka.Message` the core reads."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> str | bytes | None: ...
    def value(self) -> str | bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...


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


# --------------------------------------------------------------------------------------------
# Decoding and validation
# --------------------------------------------------------------------------------------------


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


def _payload_fields(raw: bytes, truncated: bool) -> dict[str, str]:
    # A truncated payload may end inside a multi-byte character: up to 3 bytes are trimmed for
    # that, and only then; any other undecodable payload is kept byte for byte as base64.
    for cut in range(min(3, len(raw)) + 1 if truncated else 1):
        try:
            return {"payload_text": raw[: len(raw) - cut].decode("utf-8")}
        except UnicodeDecodeError:
            continue
    return {"payload_base64": base64.b64encode(raw).decode("ascii")}


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

    raw_text = get_path(obj, fmt.text_field)
    if raw_text is _MISSING or raw_text is None:
        raise _InvalidError(DeadLetterKind.MISSING_FIELD, f"missing text field {fmt.text_field!r}")
    if not isinstance(raw_text, str):
        raise _InvalidError(
            DeadLetterKind.WRONG_TYPE,
            f"text field {fmt.text_field!r} must be a string, got {type(raw_text).__name__}",
        )

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
    msg: KafkaMessage, fmt: InputFormat, max_bytes: int, now: datetime | None = None
) -> Inbound:
    """Bytes -> `TweetIn`, or the `DeadLetter` that says why not. Never raises for any payload."""
    source = SourceRef(
        topic=msg.topic() or "", partition=msg.partition() or 0, offset=msg.offset() or 0
    )
    key = _as_bytes(msg.key())
    ts_type, ts_ms = msg.timestamp()
    kafka_ts = ts_ms if ts_type != TIMESTAMP_NOT_AVAILABLE and ts_ms >= 0 else None
    raw = _as_bytes(msg.value())
    try:
        tweet = _validate(raw, fmt, max_bytes)
    except _InvalidError as bad:
        payload = b"" if raw is None else raw[:max_bytes]
        truncated = raw is not None and len(raw) > max_bytes
        letter = DeadLetter(
            error_kind=bad.kind,
            error_message=bad.message,
            key=None if key is None else key.decode("utf-8", errors="replace"),
            source=source,
            dead_lettered_at=now or datetime.now(UTC),
            **_payload_fields(payload, truncated),
        )
        return Inbound(source=source, key=key, kafka_timestamp_ms=kafka_ts, dead_letter=letter)
    return Inbound(source=source, key=key, kafka_timestamp_ms=kafka_ts, tweet=tweet)


def internal_error(item: Inbound, message: str, now: datetime | None = None) -> Inbound:
    """Turn an item whose processing failed (a pipeline or model bug on this one input) into a
    dead letter, so the input still gets exactly one output and the stream goes on."""
    payload: dict[str, str]
    if item.tweet is not None:
        payload = {"payload_text": item.tweet.model_dump_json()}
    elif item.dead_letter is not None:
        return item
    else:
        payload = {"payload_text": ""}
    letter = DeadLetter(
        error_kind=DeadLetterKind.INTERNAL_ERROR,
        error_message=message[:1000],
        key=None if item.key is None else item.key.decode("utf-8", errors="replace"),
        source=item.source,
        dead_lettered_at=now or datetime.now(UTC),
        **payload,
    )
    return Inbound(
        source=item.source,
        key=item.key,
        kafka_timestamp_ms=item.kafka_timestamp_ms,
        dead_letter=letter,
    )


# --------------------------------------------------------------------------------------------
# Output records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One record to produce, tied back to the input it answers."""

    topic: str
    key: bytes | None
    value: bytes
    source: SourceRef
    kafka_timestamp_ms: int | None
    # For metrics: "classified" / "skipped" / "dead_letter", and the label, reason or kind.
    outcome: str
    detail: str

    @property
    def tp(self) -> TopicPartitionKey:
        return (self.source.topic, self.source.partition)


def sentiment_record(
    item: Inbound,
    clean: CleanResultLike,
    probs: Sequence[float] | None,
    *,
    labels: Sequence[Label],
    model_version: str,
    include_text: bool,
    processed_time: datetime,
) -> SentimentOut:
    """The output for a tweet: classified when the pipeline kept it and `probs` (one per label,
    in `labels` order) exist, skipped with the pipeline's reason otherwise."""
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


def to_out_record(item: Inbound, value: SentimentOut | DeadLetter, topic: str) -> OutRecord:
    key: bytes | None
    if isinstance(value, SentimentOut):
        key = value.id.encode("utf-8")
        if value.status is Status.CLASSIFIED:
            outcome, detail = "classified", str(value.label)
        else:
            outcome, detail = "skipped", str(value.skip_reason)
    else:
        key = item.key
        outcome, detail = "dead_letter", str(value.error_kind)
    return OutRecord(
        topic=topic,
        key=key,
        value=value.model_dump_json().encode("utf-8"),
        source=item.source,
        kafka_timestamp_ms=item.kafka_timestamp_ms,
        outcome=outcome,
        detail=detail,
    )


# --------------------------------------------------------------------------------------------
# Offset tracking (at-least-once)
# --------------------------------------------------------------------------------------------


@dataclass
class _PartitionState:
    order: deque[int] = field(default_factory=deque)
    done: dict[int, bool] = field(default_factory=dict)
    last_tracked: int = -1
    safe: int | None = None  # next offset to commit: every input before it has an acked output
    committed: int | None = None


class OffsetTracker:
    """Per partition, the consumed offsets in consumption order and which of them have their
    output acknowledged by the broker. The commit position only ever moves over a contiguous
    prefix of acknowledged inputs, so a crash can repeat work but never skip it.

    Acks may arrive in any order (outputs go to other partitions, retries reorder them); offsets
    may have gaps (compaction, transaction markers): only consumed offsets are waited for.
    """

    def __init__(self) -> None:
        self._parts: dict[TopicPartitionKey, _PartitionState] = {}

    def track(self, tp: TopicPartitionKey, offset: int) -> None:
        state = self._parts.setdefault(tp, _PartitionState())
        if offset <= state.last_tracked:
            # A rewind (seek, or a re-assignment that restarts from the committed offset):
            # older pending entries would otherwise block the prefix forever.
            state.order.clear()
            state.done.clear()
        state.order.append(offset)
        state.done[offset] = False
        state.last_tracked = offset

    def ack(self, tp: TopicPartitionKey, offset: int) -> bool:
        """Mark one input's output as delivered. False when the partition or offset is no longer
        tracked (revoked, rewound): such a late ack is ignored."""
        state = self._parts.get(tp)
        if state is None or offset not in state.done:
            return False
        state.done[offset] = True
        order, done = state.order, state.done
        while order and done[order[0]]:
            head = order.popleft()
            del done[head]
            state.safe = head + 1
        return True

    def safe_offset(self, tp: TopicPartitionKey) -> int | None:
        state = self._parts.get(tp)
        return None if state is None else state.safe

    def pending(self, tp: TopicPartitionKey | None = None) -> int:
        if tp is not None:
            state = self._parts.get(tp)
            return 0 if state is None else len(state.order)
        return sum(len(s.order) for s in self._parts.values())

    def committable(
        self, tps: Iterable[TopicPartitionKey] | None = None
    ) -> dict[TopicPartitionKey, int]:
        """Safe offsets that moved past what was last committed."""
        wanted = self._parts.keys() if tps is None else [tp for tp in tps if tp in self._parts]
        out: dict[TopicPartitionKey, int] = {}
        for tp in wanted:
            state = self._parts[tp]
            if state.safe is not None and (state.committed is None or state.safe > state.committed):
                out[tp] = state.safe
        return out

    def mark_committed(self, offsets: dict[TopicPartitionKey, int]) -> None:
        for tp, offset in offsets.items():
            state = self._parts.get(tp)
            if state is not None and (state.committed is None or offset > state.committed):
                state.committed = offset

    def uncommit(self, tps: Iterable[TopicPartitionKey]) -> None:
        """Forget what was last committed (an asynchronous commit failed), so it is retried."""
        for tp in tps:
            state = self._parts.get(tp)
            if state is not None:
                state.committed = None

    def revoke(self, tps: Iterable[TopicPartitionKey]) -> None:
        """Forget partitions: their undelivered inputs are redelivered to the next owner."""
        for tp in tps:
            self._parts.pop(tp, None)

    def clear(self) -> None:
        self._parts.clear()

    def partitions(self) -> list[TopicPartitionKey]:
        return list(self._parts)

    def last_tracked(self, tp: TopicPartitionKey) -> int | None:
        state = self._parts.get(tp)
        return None if state is None or state.last_tracked < 0 else state.last_tracked


# --------------------------------------------------------------------------------------------
# Micro-batching
# --------------------------------------------------------------------------------------------

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    """Collects items until `max_items` or until `linger_s` passed since the batch's first item.

    The caller also asks whether downstream can take a batch: while it cannot, the batch keeps
    growing up to `max_items` (adaptive batching: under load batches fill, idle they stay small
    and leave after `linger_s`).
    """

    def __init__(
        self, max_items: int, linger_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        self.max_items = max_items
        self.linger_s = max(0.0, linger_s)
        self._clock = clock
        self._items: list[T] = []
        self._first_at: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def room(self) -> int:
        return max(0, self.max_items - len(self._items))

    @property
    def full(self) -> bool:
        return len(self._items) >= self.max_items

    def add(self, item: T) -> None:
        if not self._items:
            self._first_at = self._clock()
        self._items.append(item)

    def deadline(self) -> float | None:
        return None if self._first_at is None else self._first_at + self.linger_s

    def due(self, now: float | None = None) -> bool:
        if not self._items:
            return False
        if self.full:
            return True
        deadline = self.deadline()
        return deadline is not None and (self._clock() if now is None else now) >= deadline

    def take(self) -> list[T]:
        items, self._items, self._first_at = self._items, [], None
        return items

    def drop(self, predicate: Callable[[T], bool]) -> int:
        kept = [item for item in self._items if not predicate(item)]
        dropped = len(self._items) - len(kept)
        self._items = kept
        if not kept:
            self._first_at = None
        return dropped


def batch_offsets(items: Iterable[Inbound]) -> dict[TopicPartitionKey, int]:
    """Per partition the next offset to consume after these items (for a transaction commit)."""
    out: dict[TopicPartitionKey, int] = {}
    for item in items:
        nxt = item.offset + 1
        if out.get(item.tp, -1) < nxt:
            out[item.tp] = nxt
    return out
