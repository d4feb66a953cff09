"""The downstream subscriber helper with a fake consumer: parse, filter by asset, keep each input
once under every output keying, commit what was read, skip what is not a SentimentOut."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from ops.settings import KafkaSettings, OutputKey
from schemas.messages import Label, SentimentOut, SourceRef, Status
from stream.apps.subscriber import SentimentSubscriber
from stream.core.records import wanted

NOW = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass
class Msg:
    _value: bytes | None
    _key: bytes | None
    _offset: int
    _partition: int = 0
    _topic: str = "sentiment"

    def error(self) -> None:
        return None

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


class FakeConsumer:
    def __init__(self, batches: list[list[Msg]]) -> None:
        self.batches = batches
        self.subscribed: list[str] = []
        self.commits: list[list[tuple[str, int, int]]] = []
        self.closed = False
        self.conf: dict[str, Any] = {}

    def subscribe(self, topics: list[str], **_: Any) -> None:
        self.subscribed = topics

    def consume(self, num_messages: int = 1, timeout: float = 0) -> list[Msg]:
        return self.batches.pop(0) if self.batches else []

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool = True) -> list[Any]:
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])
        return []

    def close(self) -> None:
        self.closed = True


class Clients:
    def __init__(self, consumer: FakeConsumer) -> None:
        self.fake = consumer

    def consumer(self, conf: dict[str, Any]) -> FakeConsumer:
        self.fake.conf = conf
        return self.fake

    def producer(self, conf: dict[str, Any]) -> Any:
        raise AssertionError("a subscriber produces nothing")


def out(i: int, assets: list[str]) -> SentimentOut:
    return SentimentOut(
        id=f"t{i}",
        status=Status.CLASSIFIED,
        label=Label.POSITIVE,
        p_positive=0.8,
        p_negative=0.2,
        model_version="m",
        source=SourceRef(topic="in", partition=0, offset=i),
        processed_time=NOW,
        assets=assets,
        asset_map_version="1",
    )


def stream_of(output_key: OutputKey) -> list[Msg]:
    """What serve writes for four inputs under `output_key` (keys as records.keyed_records)."""
    posts = [out(0, ["ETH", "BTC"]), out(1, ["BTC"]), out(2, []), out(3, ["SOL", "ETH"])]
    msgs: list[Msg] = []
    for post in posts:
        value = post.model_dump_json().encode()
        if output_key == "tweet_id" or not post.assets:
            keys = [post.id]
        elif output_key == "primary_asset":
            keys = [post.assets[0]]
        else:
            keys = list(post.assets)
        for key in keys:
            msgs.append(Msg(value, key.encode(), len(msgs)))
    return msgs


def subscriber(
    batches: list[list[Msg]], assets: list[str] | None, output_key: OutputKey
) -> tuple[SentimentSubscriber, FakeConsumer]:
    fake = FakeConsumer(batches)
    sub = SentimentSubscriber(
        KafkaSettings(),
        "sentiment",
        group_id="desk",
        assets=assets,
        output_key=output_key,
        from_beginning=True,
        clients=Clients(fake),  # type: ignore[arg-type]
    )
    return sub, fake


@pytest.mark.parametrize("output_key", ["tweet_id", "primary_asset", "asset_fanout"])
@pytest.mark.parametrize(
    ("assets", "ids"),
    [
        (None, ["t0", "t1", "t2", "t3"]),
        (["eth"], ["t0", "t3"]),
        (["BTC"], ["t0", "t1"]),
        (["ETH", "BTC"], ["t0", "t1", "t3"]),
        (["DOGE"], []),
    ],
)
def test_each_wanted_input_once_whatever_the_keying(
    output_key: OutputKey, assets: list[str] | None, ids: list[str]
) -> None:
    sub, fake = subscriber([stream_of(output_key)], assets, output_key)
    got = sub.poll()
    assert [r.record.id for r in got] == ids
    assert all(isinstance(r.record, SentimentOut) for r in got)
    assert fake.subscribed == ["sentiment"]
    assert fake.conf["group.id"] == "desk"
    assert fake.conf["auto.offset.reset"] == "earliest"


def test_fanout_copy_kept_is_the_first_wanted_asset() -> None:
    eth_btc = out(0, ["ETH", "BTC"])
    assert wanted(eth_btc, "BTC", frozenset({"BTC"}), "asset_fanout")
    assert not wanted(eth_btc, "ETH", frozenset({"BTC"}), "asset_fanout")
    assert wanted(eth_btc, "ETH", frozenset({"BTC", "ETH"}), "asset_fanout")
    assert not wanted(eth_btc, "BTC", frozenset({"BTC", "ETH"}), "asset_fanout")
    # primary_asset: one record per input, kept whatever its key.
    assert wanted(eth_btc, "ETH", frozenset({"BTC"}), "primary_asset")


def test_invalid_records_are_counted_and_skipped_and_commit_covers_them() -> None:
    good = out(5, ["ETH"]).model_dump_json().encode()
    batches = [
        [Msg(b"not json", None, 0), Msg(good, b"t5", 1), Msg(None, None, 2)],
        [Msg(b'{"error_kind": "oversized"}', None, 0, _partition=1)],
    ]
    sub, fake = subscriber(batches, ["ETH"], "tweet_id")
    with sub:
        first = sub.poll()
        assert [r.record.id for r in first] == ["t5"]
        assert (first[0].key, first[0].partition, first[0].offset) == ("t5", 0, 1)
        sub.commit()
        assert sub.poll() == []
        sub.commit()
        sub.commit()  # nothing new read: nothing to commit
    assert fake.commits == [[("sentiment", 0, 3)], [("sentiment", 1, 1)]]
    assert (sub.stats.read, sub.stats.kept, sub.stats.invalid) == (4, 1, 3)
    assert sub.stats.by_asset == {"ETH": 1}
    assert fake.closed


def test_records_iterates_until_idle() -> None:
    ticks = iter(range(100))
    fake = FakeConsumer([stream_of("tweet_id")[:2], [], stream_of("tweet_id")[2:], [], [], []])
    sub = SentimentSubscriber(
        KafkaSettings(),
        "sentiment",
        group_id="desk",
        clients=Clients(fake),  # type: ignore[arg-type]
        clock=lambda: float(next(ticks)),
    )
    got = [r.record.id for r in sub.records(idle_timeout_s=2.5)]
    assert got == ["t0", "t1", "t2", "t3"]
    assert fake.conf["auto.offset.reset"] == "latest"
