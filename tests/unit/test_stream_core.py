"""The pure core of `serve`: decoding, output records, offset tracking, micro-batching."""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE
from hypothesis import given, settings
from hypothesis import strategies as st

from ops.kafka import message_timestamp_ms
from ops.settings import InputFormat
from schemas.messages import (
    DeadLetter,
    DeadLetterKind,
    Label,
    SentimentOut,
    SkipReason,
    Status,
)
from stream.core import (
    Inbound,
    MicroBatcher,
    OffsetTracker,
    Outcome,
    batch_offsets,
    decode_message,
    get_path,
    internal_error,
    parse_event_time,
    sentiment_record,
    to_out_record,
    too_large_record,
)

FMT = InputFormat()
NOW = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class FakeMessage:
    """Quacks like confluent_kafka.Message for the core's `KafkaMessage` protocol."""

    _value: bytes | str | None
    _key: bytes | str | None = None
    _topic: str = "tweets"
    _partition: int = 0
    _offset: int = 0
    _timestamp: tuple[int, int] = (TIMESTAMP_CREATE_TIME, 1_700_000_000_000)

    def topic(self) -> str | None:
        return self._topic

    def partition(self) -> int | None:
        return self._partition

    def offset(self) -> int | None:
        return self._offset

    def key(self) -> bytes | str | None:
        return self._key

    def value(self) -> bytes | str | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp


@dataclass(frozen=True)
class Clean:
    text: str | None
    skip_reason: SkipReason | None = None
    language: str | None = "en"

    @property
    def kept(self) -> bool:
        return self.skip_reason is None


def decode(value: bytes | str | None, fmt: InputFormat = FMT, max_bytes: int = 4096) -> Inbound:
    msg = FakeMessage(value, _key=b"k1", _offset=7)
    return decode_message(msg, fmt, max_bytes, NOW, timestamp_ms=message_timestamp_ms(msg))  # type: ignore[arg-type]


def dead_kind(value: bytes | str | None, **kw: object) -> DeadLetterKind:
    item = decode(value, **kw)  # type: ignore[arg-type]
    assert item.tweet is None
    assert item.dead_letter is not None
    return item.dead_letter.error_kind


# -- decoding ----------------------------------------------------------------------------------


def test_valid_tweet_decodes_with_int_id_label_and_time() -> None:
    item = decode(
        json.dumps(
            {"id": 42, "text": "eth up", "created_at": "2022-06-25T14:09:10Z", "label": "Positive"}
        ).encode()
    )
    assert item.dead_letter is None
    assert item.tweet is not None
    assert item.tweet.id == "42"
    assert item.tweet.text == "eth up"
    assert item.tweet.created_at == datetime(2022, 6, 25, 14, 9, 10, tzinfo=UTC)
    assert item.tweet.label is Label.POSITIVE
    assert item.source.offset == 7
    assert item.kafka_timestamp_ms == 1_700_000_000_000


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"\xff\xfe{}", DeadLetterKind.INVALID_UTF8),
        (b'{"id": "1", "text": "caf\xe9"}', DeadLetterKind.INVALID_UTF8),
        (b"{not json", DeadLetterKind.INVALID_JSON),
        (b"", DeadLetterKind.INVALID_JSON),
        (None, DeadLetterKind.INVALID_JSON),
        (b"[" * 2000 + b"]" * 2000, DeadLetterKind.INVALID_JSON),
        (b"[1, 2]", DeadLetterKind.NOT_AN_OBJECT),
        (b'"a string"', DeadLetterKind.NOT_AN_OBJECT),
        (b"3.5", DeadLetterKind.NOT_AN_OBJECT),
        (b"null", DeadLetterKind.NOT_AN_OBJECT),
        (b'{"text": "no id"}', DeadLetterKind.MISSING_FIELD),
        (b'{"id": null, "text": "null id"}', DeadLetterKind.MISSING_FIELD),
        (b'{"id": "1"}', DeadLetterKind.MISSING_FIELD),
        (b'{"id": "1", "text": null}', DeadLetterKind.MISSING_FIELD),
        (b'{"id": 1.5, "text": "float id"}', DeadLetterKind.WRONG_TYPE),
        (b'{"id": true, "text": "bool id"}', DeadLetterKind.WRONG_TYPE),
        (b'{"id": [1], "text": "list id"}', DeadLetterKind.WRONG_TYPE),
        (b'{"id": "", "text": "empty id"}', DeadLetterKind.WRONG_TYPE),
        (json.dumps({"id": "x" * 257, "text": "long id"}).encode(), DeadLetterKind.WRONG_TYPE),
        (b'{"id": "1", "text": 5}', DeadLetterKind.WRONG_TYPE),
        (b'{"id": "1", "text": ["a"]}', DeadLetterKind.WRONG_TYPE),
        (b'{"id": "1", "text": "t", "created_at": "yesterday"}', DeadLetterKind.WRONG_TYPE),
        (b'{"id": "1", "text": "t", "created_at": true}', DeadLetterKind.WRONG_TYPE),
        (b'{"id": "1", "text": "t", "created_at": {"a": 1}}', DeadLetterKind.WRONG_TYPE),
    ],
)
def test_malformed_inputs_map_to_their_dead_letter_kind(
    payload: bytes | None, kind: DeadLetterKind
) -> None:
    assert dead_kind(payload) is kind


def test_oversized_payload_is_dead_lettered_truncated() -> None:
    body = json.dumps({"id": "1", "text": "é" * 400}).encode()
    item = decode(body, max_bytes=301)
    letter = item.dead_letter
    assert letter is not None
    assert letter.error_kind is DeadLetterKind.OVERSIZED
    # Cut inside a two-byte character: the partial character is trimmed, the rest kept as text.
    assert letter.payload_text is not None
    assert body.decode().startswith(letter.payload_text)
    assert 298 <= len(letter.payload_text.encode()) <= 301


def test_exactly_max_bytes_is_accepted() -> None:
    body = json.dumps({"id": "1", "text": "a" * 100}).encode()
    assert decode(body, max_bytes=len(body)).tweet is not None
    assert dead_kind(body, max_bytes=len(body) - 1) is DeadLetterKind.OVERSIZED


def test_dead_letter_keeps_payload_and_key_verbatim() -> None:
    raw = b"\x00\xff garbage \xc3"
    item = decode(raw)
    letter = item.dead_letter
    assert letter is not None
    assert letter.payload_text is None
    assert letter.payload_base64 is not None
    assert base64.b64decode(letter.payload_base64) == raw
    assert letter.key == "k1"
    assert letter.source.offset == 7
    assert letter.dead_lettered_at == NOW
    text_item = decode(b"{oops")
    assert text_item.dead_letter is not None
    assert text_item.dead_letter.payload_text == "{oops"


def test_twitter_v2_dotted_paths() -> None:
    fmt = InputFormat(
        id_field="data.id", text_field="data.text", created_at_field="data.created_at"
    )
    payload = {
        "data": {"id": "1550", "text": "gm $ETH", "created_at": "2022-07-01T10:00:00.000Z"},
        "includes": {"users": [{"id": "9"}]},
    }
    item = decode(json.dumps(payload).encode(), fmt=fmt)
    assert item.tweet is not None
    assert item.tweet.id == "1550"
    assert item.tweet.text == "gm $ETH"
    assert item.tweet.created_at == datetime(2022, 7, 1, 10, tzinfo=UTC)
    missing = decode(json.dumps({"text": "top-level only", "id": 1}).encode(), fmt=fmt)
    assert missing.dead_letter is not None
    assert missing.dead_letter.error_kind is DeadLetterKind.MISSING_FIELD
    assert "data.id" in missing.dead_letter.error_message


def test_get_path_handles_lists_and_literal_dotted_keys() -> None:
    obj = {"a": {"b": [{"c": 1}, {"c": 2}]}, "x.y": 3}
    assert get_path(obj, "a.b.1.c") == 2
    assert get_path(obj, "x.y") == 3
    assert get_path(obj, "a.b.5.c") is not None  # the _MISSING sentinel, not an exception
    assert get_path(obj, "a.b.5.c") is get_path(obj, "nope")


def test_string_message_values_and_bom_are_accepted() -> None:
    assert decode('{"id": "s", "text": "str value"}').tweet is not None
    assert decode(b'\xef\xbb\xbf{"id": "b", "text": "bom"}').tweet is not None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2022-06-25T14:09:10Z", datetime(2022, 6, 25, 14, 9, 10, tzinfo=UTC)),
        ("2022-06-25 14:09:10", datetime(2022, 6, 25, 14, 9, 10, tzinfo=UTC)),
        ("Sat Jun 25 14:09:10 +0000 2022", datetime(2022, 6, 25, 14, 9, 10, tzinfo=UTC)),
        (1656166150, datetime(2022, 6, 25, 14, 9, 10, tzinfo=UTC)),
        (1656166150000, datetime(2022, 6, 25, 14, 9, 10, tzinfo=UTC)),
        (None, None),
    ],
)
def test_event_time_formats(value: object, expected: datetime | None) -> None:
    assert parse_event_time(value) == expected


def test_unknown_reference_labels_are_dropped_not_dead_lettered() -> None:
    for raw, expected in [
        ("NEGATIVE", Label.NEGATIVE),
        ("bullish", Label.POSITIVE),
        ("Neutral", None),
        (1, None),
        (None, None),
    ]:
        item = decode(json.dumps({"id": "1", "text": "t", "label": raw}).encode())
        assert item.tweet is not None
        assert item.tweet.label is expected


def test_missing_kafka_timestamp() -> None:
    msg = FakeMessage(b'{"id": "1", "text": "t"}', _timestamp=(TIMESTAMP_NOT_AVAILABLE, -1))
    assert message_timestamp_ms(msg) is None  # type: ignore[arg-type]
    assert decode_message(msg, FMT, 1000, NOW, timestamp_ms=None).kafka_timestamp_ms is None
    # A negative timestamp is no timestamp, whatever the shell passed.
    assert decode_message(msg, FMT, 1000, NOW, timestamp_ms=-1).kafka_timestamp_ms is None


# -- output records ----------------------------------------------------------------------------


def _tweet_item(**fields: object) -> Inbound:
    body = {"id": "t1", "text": "Original $ETH text", **fields}
    item = decode(json.dumps(body).encode())
    assert item.tweet is not None
    return item


LABELS = [Label.NEGATIVE, Label.POSITIVE]


def test_classified_record() -> None:
    item = _tweet_item(label="negative", created_at="2022-01-01T00:00:00Z")
    out = sentiment_record(
        item,
        Clean("original eth text"),
        [0.2, 0.8],
        labels=LABELS,
        model_version="v1",
        include_text=True,
        processed_time=NOW,
    )
    assert out.status is Status.CLASSIFIED
    assert out.label is Label.POSITIVE
    assert out.p_positive == pytest.approx(0.8)
    assert out.p_negative == pytest.approx(0.2)
    assert out.text == "Original $ETH text"  # the original, not the cleaned text
    assert out.reference_label is Label.NEGATIVE
    assert out.event_time == datetime(2022, 1, 1, tzinfo=UTC)
    assert out.processed_time == NOW
    assert out.model_version == "v1"
    assert out.language == "en"
    assert out.source.offset == 7
    record = to_out_record(item, out, "sentiment")
    assert record.key == b"t1"
    assert record.topic == "sentiment"
    assert (record.outcome, record.detail) == ("classified", "POSITIVE")
    parsed = SentimentOut.model_validate_json(record.value)
    assert parsed == out


def test_skipped_record_and_event_time_fallback() -> None:
    item = _tweet_item()
    out = sentiment_record(
        item,
        Clean(None, SkipReason.NON_ENGLISH, "de"),
        None,
        labels=LABELS,
        model_version="v1",
        include_text=False,
        processed_time=NOW,
    )
    assert out.status is Status.SKIPPED
    assert out.skip_reason is SkipReason.NON_ENGLISH
    assert out.label is None
    assert out.p_positive is None
    assert out.text is None
    assert out.language == "de"
    assert out.event_time == datetime.fromtimestamp(1_700_000_000, tz=UTC)
    record = to_out_record(item, out, "sentiment")
    assert (record.outcome, record.detail) == ("skipped", "non_english")


def test_kept_but_empty_text_is_reported_skipped() -> None:
    out = sentiment_record(
        _tweet_item(),
        Clean(""),
        None,
        labels=LABELS,
        model_version="v1",
        include_text=True,
        processed_time=NOW,
    )
    assert out.skip_reason is SkipReason.EMPTY_AFTER_CLEANING


def test_label_order_follows_the_artifact() -> None:
    out = sentiment_record(
        _tweet_item(),
        Clean("x"),
        [0.9, 0.1],
        labels=[Label.POSITIVE, Label.NEGATIVE],
        model_version="v1",
        include_text=True,
        processed_time=NOW,
    )
    assert out.label is Label.POSITIVE
    assert out.p_positive == pytest.approx(0.9)


def test_dead_letter_record_and_internal_error() -> None:
    bad = decode(b"[]")
    assert bad.dead_letter is not None
    rec = to_out_record(bad, bad.dead_letter, "dlq")
    assert rec.key == b"k1"
    assert (rec.outcome, rec.detail) == ("dead_letter", "not_an_object")
    DeadLetter.model_validate_json(rec.value)
    good = _tweet_item()
    failed = internal_error(good, "boom", NOW)
    assert failed.dead_letter is not None
    assert failed.dead_letter.error_kind is DeadLetterKind.INTERNAL_ERROR
    assert failed.dead_letter.payload_text is not None
    assert json.loads(failed.dead_letter.payload_text)["id"] == "t1"
    assert internal_error(bad, "again") is bad


def test_output_too_large_becomes_one_oversized_dead_letter() -> None:
    good = _tweet_item()
    assert good.tweet is not None
    out = sentiment_record(
        good,
        Clean("original eth text"),
        [0.2, 0.8],
        labels=LABELS,
        model_version="m1",
        include_text=True,
        processed_time=NOW,
    )
    record = to_out_record(good, out, "out")
    swapped = too_large_record(record, "dlq", NOW)
    assert (swapped.topic, swapped.outcome, swapped.detail) == (
        "dlq",
        Outcome.TOO_LARGE,
        "oversized",
    )
    assert swapped.outcome.is_dead_letter
    assert not record.outcome.is_dead_letter
    assert (swapped.source, swapped.key) == (record.source, record.key)
    letter = DeadLetter.model_validate_json(swapped.value)
    assert letter.error_kind is DeadLetterKind.OVERSIZED
    assert letter.payload_text == ""
    assert str(len(record.value)) in letter.error_message


# -- offset tracker ----------------------------------------------------------------------------

TP = ("tweets", 0)


def test_tracker_commits_only_a_contiguous_acked_prefix() -> None:
    tr = OffsetTracker()
    for off in range(5):
        tr.track(TP, off)
    assert tr.safe_offset(TP) is None
    tr.ack(TP, 2)
    tr.ack(TP, 1)
    assert tr.safe_offset(TP) is None  # 0 still outstanding
    tr.ack(TP, 0)
    assert tr.safe_offset(TP) == 3
    assert tr.pending(TP) == 2
    tr.ack(TP, 4)
    assert tr.safe_offset(TP) == 3
    tr.ack(TP, 3)
    assert tr.safe_offset(TP) == 5
    assert tr.pending() == 0


def test_tracker_with_offset_gaps() -> None:
    tr = OffsetTracker()
    for off in (10, 11, 15, 20):  # compaction / transaction markers leave gaps
        tr.track(TP, off)
    tr.ack(TP, 10)
    tr.ack(TP, 15)
    assert tr.safe_offset(TP) == 11
    tr.ack(TP, 11)
    assert tr.safe_offset(TP) == 16
    tr.ack(TP, 20)
    assert tr.safe_offset(TP) == 21


def test_tracker_committable_and_mark() -> None:
    tr = OffsetTracker()
    other = ("tweets", 1)
    tr.track(TP, 0)
    tr.track(other, 0)
    tr.ack(TP, 0)
    assert tr.committable() == {TP: 1}
    tr.mark_committed({TP: 1})
    assert tr.committable() == {}
    tr.ack(other, 0)
    assert tr.committable([TP]) == {}
    assert tr.committable([other, ("nope", 0)]) == {other: 1}
    tr.uncommit([TP])
    assert tr.committable() == {TP: 1, other: 1}


def test_tracker_revoke_ignores_late_acks() -> None:
    tr = OffsetTracker()
    tr.track(TP, 0)
    tr.revoke([TP])
    assert tr.ack(TP, 0) is False
    assert tr.safe_offset(TP) is None
    tr.track(TP, 3)
    assert tr.ack(TP, 99) is False
    assert tr.ack(TP, 3) is True


def test_tracker_rewind_restarts_the_partition() -> None:
    tr = OffsetTracker()
    for off in range(3):
        tr.track(TP, off)
    tr.ack(TP, 0)
    tr.track(TP, 1)  # re-consumed after a seek: earlier pending entries are dropped
    assert tr.pending(TP) == 1
    tr.ack(TP, 1)
    assert tr.safe_offset(TP) == 2


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=60),
    seed=st.integers(min_value=0, max_value=10_000),
    acked_fraction=st.floats(min_value=0, max_value=1),
)
def test_tracker_safe_offset_is_first_unacked(n: int, seed: int, acked_fraction: float) -> None:
    rng = random.Random(seed)
    offsets = sorted(rng.sample(range(n * 3), n))
    tr = OffsetTracker()
    for off in offsets:
        tr.track(TP, off)
    acked = set(rng.sample(offsets, int(len(offsets) * acked_fraction)))
    order = list(acked)
    rng.shuffle(order)
    for off in order:
        assert tr.ack(TP, off)
    unacked = [o for o in offsets if o not in acked]
    if not unacked:
        assert tr.safe_offset(TP) == offsets[-1] + 1
    else:
        first = unacked[0]
        before = [o for o in offsets if o < first]
        assert tr.safe_offset(TP) == (before[-1] + 1 if before else None)


# -- micro-batching ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_batcher_closes_on_size() -> None:
    clock = FakeClock()
    b: MicroBatcher[int] = MicroBatcher(3, linger_s=10, clock=clock)
    assert not b.due()
    b.add(1)
    b.add(2)
    assert not b.due()
    assert b.room == 1
    b.add(3)
    assert b.full
    assert b.due()
    assert b.take() == [1, 2, 3]
    assert len(b) == 0
    assert b.deadline() is None


def test_batcher_closes_on_linger_from_first_item() -> None:
    clock = FakeClock()
    b: MicroBatcher[int] = MicroBatcher(100, linger_s=0.05, clock=clock)
    b.add(1)
    assert b.deadline() == pytest.approx(100.05)
    clock.now += 0.04
    b.add(2)
    assert not b.due()
    clock.now += 0.011
    assert b.due()
    assert b.take() == [1, 2]
    clock.now += 5
    assert not b.due()  # empty batches are never due
    b.add(3)
    assert b.deadline() == pytest.approx(clock.now + 0.05)


def test_batcher_drop_and_zero_linger() -> None:
    clock = FakeClock()
    b: MicroBatcher[int] = MicroBatcher(10, linger_s=0, clock=clock)
    b.add(1)
    assert b.due()
    b.add(2)
    b.add(3)
    assert b.drop(lambda x: x != 2) == 2
    assert b.take() == [2]
    b.add(5)
    assert b.drop(lambda x: True) == 1
    assert b.deadline() is None
    with pytest.raises(ValueError, match="max_items"):
        MicroBatcher(0, 1.0)


def test_batch_offsets_are_next_offsets_per_partition() -> None:
    items = [
        decode_message(FakeMessage(b"{}", _partition=p, _offset=o), FMT, 100, NOW, timestamp_ms=1)
        for p, o in [(0, 5), (1, 2), (0, 7), (0, 6)]
    ]
    assert batch_offsets(items) == {("tweets", 0): 8, ("tweets", 1): 3}
