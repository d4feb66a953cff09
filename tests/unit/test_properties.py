"""Property tests: the decoder and the text pipeline never raise and always give exactly one
outcome, whatever bytes or text arrive; and every outcome can be written to Kafka."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ops.settings import InputFormat, TextSettings
from schemas.messages import DeadLetterKind, Label, TweetIn
from stream.core import Inbound, decode_message, sentiment_record, to_out_record
from stream.core.text import CleanResult, TextPipeline

MAX_BYTES = 4096
FMT = InputFormat()
NOW = datetime(2026, 1, 1, tzinfo=UTC)
LABELS = [Label.NEGATIVE, Label.POSITIVE]


class FakeMessage:
    def __init__(self, value: bytes | str | None, key: bytes | str | None = b"k") -> None:
        self._value, self._key = value, key

    def topic(self) -> str:
        return "in"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7

    def key(self) -> bytes | str | None:
        return self._key

    def value(self) -> bytes | str | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Tweet-shaped objects, with every field sometimes missing, null or of a wrong type.
field_values = st.one_of(st.text(max_size=300), json_values, st.integers(), st.none())
tweetish = st.fixed_dictionaries(
    {},
    optional={
        "id": field_values,
        "text": field_values,
        "created_at": st.one_of(field_values, st.just("2022-06-25T14:09:10Z"), st.floats()),
        "label": st.one_of(st.sampled_from(["Positive", "bearish", "Neutral"]), field_values),
        "extra": json_values,
    },
)


def _one_outcome(item: Inbound) -> None:
    assert (item.tweet is None) != (item.dead_letter is None)
    assert item.source.offset == 7
    if item.dead_letter is not None:
        assert item.dead_letter.error_kind in set(DeadLetterKind)


def _writable(item: Inbound) -> None:
    """The outcome becomes one Kafka record (what serve produces), serialized without error."""
    if item.tweet is not None:
        clean = CleanResult(item.tweet.text or None, None, None)
        value: Any = sentiment_record(
            item,
            clean,
            [0.25, 0.75] if clean.text else None,
            labels=LABELS,
            model_version="m",
            include_text=True,
            processed_time=NOW,
        )
        record = to_out_record(item, value, "out")
    else:
        assert item.dead_letter is not None
        record = to_out_record(item, item.dead_letter, "dlq")
    assert json.loads(record.value)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.binary(max_size=MAX_BYTES * 2)), st.one_of(st.none(), st.binary()))
@example(b"[" * 3000 + b"]" * 3000, b"k")
@example(b"\xef\xbb\xbf{}", None)
@example(b'{"id": 1, "text": "\\u0000"}', b"\xff")
def test_decode_any_bytes_gives_one_outcome(value: bytes | None, key: bytes | None) -> None:
    item = decode_message(FakeMessage(value, key), FMT, MAX_BYTES, now=NOW, timestamp_ms=None)
    _one_outcome(item)
    _writable(item)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tweetish)
def test_decode_any_json_object_gives_one_outcome(obj: dict[str, Any]) -> None:
    raw = json.dumps(obj, ensure_ascii=False).encode("utf-8", errors="surrogatepass")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raw = json.dumps(obj).encode()  # escaped; surrogates are covered by the test below
    item = decode_message(FakeMessage(raw), FMT, MAX_BYTES, now=NOW, timestamp_ms=None)
    _one_outcome(item)
    ok_id = isinstance(obj.get("id"), str | int) and not isinstance(obj.get("id"), bool)
    if item.tweet is not None:
        assert ok_id
        assert isinstance(obj.get("text"), str)
        _writable(item)
    if "text" not in obj or obj["text"] is None:
        assert item.dead_letter is not None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=500))
def test_decode_valid_tweet_round_trips_text(text: str) -> None:
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return
    raw = json.dumps({"id": "x1", "text": text}).encode()
    item = decode_message(FakeMessage(raw), FMT, 1 << 20, now=NOW, timestamp_ms=None)
    assert item.tweet is not None
    assert item.tweet.text == text
    _writable(item)


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        (b'{"id": "a", "text": "\\ud800 moon"}', "text field 'text'"),
        (b'{"id": "b", "text": "\\udfff"}', "text field 'text'"),
        (b'{"id": "\\udc00x", "text": "moon"}', "id field 'id'"),
    ],
)
def test_lone_surrogate_escape_is_one_invalid_utf8_dead_letter(payload: bytes, where: str) -> None:
    item = decode_message(FakeMessage(payload), FMT, MAX_BYTES, now=NOW, timestamp_ms=None)
    _one_outcome(item)
    assert item.dead_letter is not None
    assert item.dead_letter.error_kind is DeadLetterKind.INVALID_UTF8
    assert where in item.dead_letter.error_message
    assert "surrogate" in item.dead_letter.error_message
    # The payload is kept as the (valid UTF-8) text that arrived.
    assert item.dead_letter.payload_text == payload.decode("utf-8")
    _writable(item)


def test_a_paired_surrogate_escape_is_a_tweet() -> None:
    raw = b'{"id": "a", "text": "\\ud83d\\ude80 moon"}'
    item = decode_message(FakeMessage(raw), FMT, MAX_BYTES, now=NOW, timestamp_ms=None)
    assert item.tweet is not None
    assert item.tweet.text == "\U0001f680 moon"
    _writable(item)


def test_an_unserializable_output_becomes_one_internal_error_dead_letter() -> None:
    """Whatever slips past decode (here a tweet built around it) must not crash serve: the
    record is swapped for an internal_error dead letter on the dead-letter topic."""
    good = decode_message(
        FakeMessage(b'{"id": "a", "text": "moon"}'), FMT, MAX_BYTES, now=NOW, timestamp_ms=None
    )
    assert good.tweet is not None
    bad_tweet = TweetIn.model_construct(id="a\ud800", text="x\udfff", created_at=None, label=None)
    item = Inbound(source=good.source, key=b"k", kafka_timestamp_ms=None, tweet=bad_tweet)
    clean = CleanResult("x", None, None)
    value = sentiment_record(
        item,
        clean,
        [0.5, 0.5],
        labels=LABELS,
        model_version="m",
        include_text=True,
        processed_time=NOW,
    )
    record = to_out_record(item, value, "out", dead_letter_topic="dlq", now=NOW)
    assert record.topic == "dlq"
    assert record.detail == str(DeadLetterKind.INTERNAL_ERROR)
    letter = json.loads(record.value)
    assert letter["error_kind"] == "internal_error"
    assert "cannot serialize" in letter["error_message"]
    assert letter["source"]["offset"] == 7


pipelines = {
    "none": TextPipeline(TextSettings(lang_backend="none")),
    "py3langid": TextPipeline(TextSettings(lang_backend="py3langid")),
}
texts = st.text(max_size=400) | st.sampled_from(
    [
        "",
        " ",
        "\u0000",
        "$ETH.X 🚀🚀",
        "@a #b https://x.y",
        "ÄÖÜ ß",
        "ｆｕｌｌ",
        "&amp;&lt;",
        "\ufeff",
    ]
)


@pytest.mark.parametrize("backend", sorted(pipelines))
@settings(max_examples=150, deadline=None)
@given(batch=st.lists(texts, max_size=8))
def test_text_pipeline_one_result_per_text(backend: str, batch: list[str]) -> None:
    results = pipelines[backend].process_batch(batch)
    assert len(results) == len(batch)
    for result in results:
        assert (result.text is None) == (result.skip_reason is not None)
        if result.kept:
            assert result.text
            assert len(result.text) >= pipelines[backend].config.min_chars
