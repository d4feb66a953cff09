"""replay (rate schedule, CSV shapes, pacing with a fake producer) and tail formatting."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ops.errors import UserError
from ops.settings import DataSettings, KafkaSettings
from schemas.messages import Label, TweetIn
from stream.apps.replay import (
    RateSchedule,
    ReplayRow,
    iter_messages,
    load_rows,
    replay,
    tweet_json,
)
from stream.apps.tail import TailSummary, format_record

# -- rate schedule -----------------------------------------------------------------------------


def test_schedule_uses_absolute_deadlines() -> None:
    s = RateSchedule(1000.0, start=10.0)
    assert s.due_at(0) == 10.0
    assert s.due_at(1000) == pytest.approx(11.0)
    assert s.allowed(9.0) == 0
    assert s.allowed(10.0) == 1
    assert s.allowed(10.5) == 501
    # A late wake-up is made up by sending immediately, not by shifting every later deadline.
    assert s.wait_s(sent=100, now=10.2) == 0.0
    assert s.wait_s(sent=300, now=10.2) == pytest.approx(0.1)


def test_schedule_unlimited() -> None:
    for rate in (None, 0.0, -1.0):
        s = RateSchedule(rate, start=5.0)
        assert s.rate is None
        assert s.allowed(0.0) is None
        assert s.wait_s(10**6, 5.0) == 0.0


def test_iter_messages_loop_and_limit() -> None:
    rows = [ReplayRow(id=str(i), text=f"t{i}", created_at=None, label=None) for i in range(3)]
    assert [(p, r.id) for p, r in iter_messages(rows, loop=False, limit=None)] == [
        (0, "0"),
        (0, "1"),
        (0, "2"),
    ]
    assert len(list(iter_messages(rows, loop=False, limit=2))) == 2
    looped = [(p, r.id) for p, r in iter_messages(rows, loop=True, limit=7)]
    assert looped[-1] == (2, "0")
    assert len(looped) == 7
    assert list(iter_messages([], loop=True, limit=None)) == []


def test_tweet_json_is_a_valid_tweet_in() -> None:
    now = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    row = ReplayRow(id="42", text="gm", created_at=None, label=Label.NEGATIVE)
    key, value = tweet_json(row, 0, now)
    assert key == b"42"
    tweet = TweetIn.model_validate_json(value)
    assert tweet.created_at == now
    assert tweet.label is Label.NEGATIVE
    key2, value2 = tweet_json(row, 3, now)
    assert key2 == b"42-loop3"
    assert json.loads(value2)["id"] == "42-loop3"
    kept = ReplayRow(id="1", text="x", created_at="2022-06-25T14:09:10Z", label=None)
    body = json.loads(tweet_json(kept, 0, now)[1])
    assert body["created_at"] == "2022-06-25T14:09:10Z"
    assert "label" not in body


# -- CSV shapes --------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_kaggle_shape_gets_stable_ids_and_labels(tmp_path: Path) -> None:
    csv = write(
        tmp_path,
        "kaggle.csv",
        "text,sentiment_label\nto the moon,Positive\n   ,Negative\nmeh,Neutral\nrekt,negative\n",
    )
    rows, bad = load_rows(csv, DataSettings(), keep_event_time=False)
    assert bad == 1
    assert [(r.id, r.text, r.label) for r in rows] == [
        ("kaggle-0", "to the moon", Label.POSITIVE),
        ("kaggle-2", "meh", None),
        ("kaggle-3", "rekt", Label.NEGATIVE),
    ]


def test_unlabeled_shape_auto_detects_id_and_time(tmp_path: Path) -> None:
    csv = write(
        tmp_path,
        "u.csv",
        "message_id,created_at,username,text\n"
        "101,2022-06-25T14:09:10Z,a,eth\n"
        "102,not a time,b,btc\n"
        ",2022-06-25T14:10:00Z,c,no id\n",
    )
    rows, bad = load_rows(csv, DataSettings(), keep_event_time=True)
    assert bad == 1  # the unreadable created_at, only because the time is to be kept
    assert [(r.id, r.created_at) for r in rows] == [
        ("101", "2022-06-25T14:09:10Z"),
        ("u-2", "2022-06-25T14:10:00Z"),
    ]
    rows, bad = load_rows(csv, DataSettings(), keep_event_time=False)
    assert bad == 0
    assert all(r.created_at is None and r.label is None for r in rows)


def test_mapped_columns_and_label_map(tmp_path: Path) -> None:
    csv = write(tmp_path, "m.csv", "tweet_id,body,stance\n7,up only,Bullish\n8,down bad,Bearish\n")
    data = DataSettings(
        text_column="body",
        label_column="stance",
        id_column="tweet_id",
        label_map={"Bullish": "Positive", "Bearish": "Negative"},
    )
    rows, _ = load_rows(csv, data, keep_event_time=False)
    assert [(r.id, r.label) for r in rows] == [("7", Label.POSITIVE), ("8", Label.NEGATIVE)]
    with pytest.raises(UserError, match="unknown label"):
        load_rows(
            csv, DataSettings(text_column="body", label_column="stance"), keep_event_time=False
        )
    with pytest.raises(UserError, match="text"):
        load_rows(csv, DataSettings(), keep_event_time=False)


def test_shared_unlabeled_csv_loads(shared_data: Callable[[str], Path]) -> None:
    rows, bad = load_rows(
        shared_data("stocktwits_eth_2022_unlabeled.csv"), DataSettings(), keep_event_time=True
    )
    assert len(rows) + bad == 7256
    assert len({r.id for r in rows}) == len(rows)
    assert rows[0].id == "468303772"


# -- pacing with a fake producer ---------------------------------------------------------------


class FakeClock:
    """Time that passes only when the fake producer waits: a replay runs without sleeping."""

    def __init__(self, start: float = 100.0, oversleep_s: float = 0.0) -> None:
        self.now = start
        # Every wait lasts this much longer than asked, like a late wake-up of a busy machine.
        self.oversleep_s = oversleep_s

    def __call__(self) -> float:
        return self.now


class FakeProducer:
    def __init__(self, fail_every: int = 0, clock: FakeClock | None = None) -> None:
        self.sent: list[tuple[str, bytes, bytes, float]] = []
        self.pending: list[Any] = []
        self.fail_every = fail_every
        self.clock = clock or FakeClock()

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        self.sent.append((topic, key, value, self.clock()))
        self.pending.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        if timeout:
            self.clock.now += timeout + self.clock.oversleep_s
        return self._deliver()

    def flush(self, timeout: float = 0) -> int:
        self._deliver()
        return 0

    def _deliver(self) -> int:
        n = len(self.pending)
        for i, cb in enumerate(self.pending):
            failed = self.fail_every and (len(self.sent) - n + i + 1) % self.fail_every == 0
            cb("boom" if failed else None, None)
        self.pending.clear()
        return n


def replay_csv(tmp_path: Path, rows: int = 250) -> Path:
    lines = "".join(f"{i},tweet number {i}\n" for i in range(rows))
    return write(tmp_path, "r.csv", "id,text\n" + lines)


def test_replay_rate_is_exact_at_1000_per_second(tmp_path: Path) -> None:
    producer = FakeProducer()
    summary = replay(
        KafkaSettings(),
        replay_csv(tmp_path),
        "t",
        rate=1000,
        limit=1000,
        loop=True,
        producer=producer,
        progress=False,
        clock=producer.clock,
    )
    assert summary.sent == 1000
    stamps = [s[3] for s in producer.sent]
    # Message i leaves at its deadline, start + i / rate, never earlier.
    assert stamps == pytest.approx([100.0 + i / 1000 for i in range(1000)], abs=1e-9)
    assert summary.seconds == pytest.approx(0.999)
    assert summary.rate == pytest.approx(1000 / 0.999)
    ids = [json.loads(s[2])["id"] for s in producer.sent]
    assert len(set(ids)) == 1000
    assert ids[250] == "0-loop1"
    assert "1000 to t" in summary.line()


def test_late_wake_ups_do_not_accumulate(tmp_path: Path) -> None:
    # Every wait oversleeps by half a message interval. Sleeping 1/rate per message would then
    # take 1.5x as long; absolute deadlines send the overdue messages at once and keep the rate.
    producer = FakeProducer(clock=FakeClock(oversleep_s=0.0005))
    summary = replay(
        KafkaSettings(),
        replay_csv(tmp_path),
        "t",
        rate=1000,
        limit=1000,
        loop=True,
        producer=producer,
        progress=False,
        clock=producer.clock,
    )
    assert summary.sent == 1000
    assert summary.rate == pytest.approx(1000, rel=0.01)
    stamps = [s[3] for s in producer.sent]
    assert all(t >= 100.0 + i / 1000 - 1e-9 for i, t in enumerate(stamps))
    assert max(t - (100.0 + i / 1000) for i, t in enumerate(stamps)) <= 0.0005 + 1e-9


def test_replay_counts_failures_and_shows_progress(tmp_path: Path) -> None:
    csv = write(tmp_path, "f.csv", "text\n" + "".join(f"t {i}\n" for i in range(10)) + '""\n')
    out = io.StringIO()
    summary = replay(
        KafkaSettings(),
        csv,
        "t",
        producer=FakeProducer(fail_every=5),
        progress=True,
        progress_file=out,
    )
    assert (summary.sent, summary.failed, summary.bad_rows) == (8, 2, 1)
    assert "10/10" in out.getvalue()
    assert "2 failed" in summary.line()


# -- tail formatting ---------------------------------------------------------------------------


def test_tail_formats_every_kind_of_record() -> None:
    classified = {
        "id": "9",
        "status": "classified",
        "label": "POSITIVE",
        "p_positive": 0.8123,
        "text": "to the\nmoon " + "x" * 200,
    }
    line, key = format_record(json.dumps(classified).encode())
    assert key == "POSITIVE"
    assert line.split()[:4] == ["9", "POSITIVE", "0.812", "classified"]
    assert "\n" not in line
    assert line.endswith("…")
    skipped = {"id": "s", "status": "skipped", "skip_reason": "non_english", "text": None}
    line, key = format_record(json.dumps(skipped))
    assert key == "skipped:non_english"
    assert "skipped:non_english" in line
    dead = {
        "error_kind": "invalid_json",
        "error_message": "invalid JSON: Expecting value",
        "source": {"topic": "in", "partition": 1, "offset": 5},
    }
    line, key = format_record(json.dumps(dead).encode())
    assert key == "dead_letter:invalid_json"
    assert "in[1]@5" in line
    assert "Expecting value" in line
    assert format_record(b"\xff\xfe not json") == ("raw: \ufffd\ufffd not json", "raw")
    assert format_record(b"[1, 2]")[1] == "raw"
    assert format_record(b'{"status": 1}')[1] == "raw"
    assert format_record(None) == ("(null)", "null")
    assert format_record(b"[" * 5000)[1] == "raw"
    odd = {"id": None, "status": "classified", "label": None, "p_positive": "x"}
    assert format_record(json.dumps(odd))[1] == "None"


def test_tail_summary_line() -> None:
    summary = TailSummary(topic="out")
    summary.counts.update(["POSITIVE", "POSITIVE", "dead_letter:oversized"])
    assert summary.total == 3
    assert summary.line() == "tail: 3 records from out (POSITIVE=2 dead_letter:oversized=1)"


def test_tail_shows_assets_and_filters_by_asset_once_per_input() -> None:
    from stream.apps.tail import asset_match

    record = {
        "id": "t1",
        "status": "classified",
        "label": "POSITIVE",
        "p_positive": 0.9,
        "p_negative": 0.1,
        "model_version": "m",
        "source": {"topic": "in", "partition": 0, "offset": 1},
        "processed_time": "2024-01-01T00:00:00Z",
        "assets": ["ETH", "BTC"],
        "asset_map_version": "1",
    }
    value = json.dumps(record).encode()
    line, _ = format_record(value)
    assert line.split()[4] == "ETH,BTC"
    assert format_record(json.dumps({**record, "assets": []}))[0].split()[4] == "-"
    eth, btc, doge = frozenset({"ETH"}), frozenset({"BTC"}), frozenset({"DOGE"})
    assert asset_match(value, b"t1", eth, "tweet_id")
    assert asset_match(value, b"t1", btc, "tweet_id")
    assert not asset_match(value, b"t1", doge, "tweet_id")
    # Fanned out: the ETH copy and the BTC copy; a BTC filter shows only the BTC copy.
    assert asset_match(value, b"BTC", btc, "asset_fanout")
    assert not asset_match(value, b"ETH", btc, "asset_fanout")
    assert asset_match(value, b"ETH", btc, "primary_asset")
    # Dead letters, raw and broken values are never a match.
    dead = {"error_kind": "invalid_json", "error_message": "x"}
    for other in (json.dumps(dead).encode(), b"not json", None, b"[" * 5000):
        assert not asset_match(other, None, eth, "tweet_id")
    summary = TailSummary(topic="out")
    summary.counts.update(["POSITIVE"])
    summary.hidden = 4
    assert summary.line() == "tail: 1 records from out (POSITIVE=1), 4 of other assets hidden"
