"""`stream.output_key`: records keyed by tweet id (default), primary asset, or fanned out one per
asset; with fan-out an input is acknowledged (and committed) only with its last record, and its
outcome is counted once."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from ops.settings import OutputKey, Settings
from schemas.messages import SentimentOut
from stream.core import Outcome, OutRecord
from stream.core.assets import AssetExtractor, load_asset_map
from stream.core.records import keyed_records, too_large_record
from stream.core.steps import Batch, build_records, infer, prepare
from stream.serve.delivery import AtLeastOnce
from stream.serve.health import Health
from stream.serve.metrics import StreamMetrics
from tests.unit.test_serve_parts import FakeConsumer, _inbound, _record
from tests.unit.test_stream_processing import NOW, FakeModel, items, tweet

EXTRACTOR = AssetExtractor(load_asset_map(None))


def records_for(output_key: OutputKey) -> list[OutRecord]:
    batch = Batch(
        seq=1,
        items=items(
            tweet(0, "Bitcoin slides as $ETH falls"),
            b"not json",
            tweet(2, "no coin named here"),
            tweet(3, "hola $SOL.X"),
        ),
    )
    model = FakeModel()
    prepare(batch, model.pipeline, model, 4, extractor=EXTRACTOR)
    infer(batch, model)
    return build_records(
        batch,
        labels=model.labels,
        model_version="m",
        include_text=False,
        output_topic="out",
        dead_letter_topic="dlq",
        asset_map_version=EXTRACTOR.version,
        output_key=output_key,
        now=NOW,
    )


def summary(records: list[OutRecord]) -> list[tuple[int, str, bytes | None, bool]]:
    return [(r.source.offset, r.topic, r.key, r.fanout_copy) for r in records]


def test_the_default_keeps_one_in_one_out_keyed_by_tweet_id() -> None:
    assert Settings().stream.output_key == "tweet_id"
    assert summary(records_for("tweet_id")) == [
        (0, "out", b"t0", False),
        (1, "dlq", None, False),
        (2, "out", b"t2", False),
        (3, "out", b"t3", False),
    ]


def test_primary_asset_keys_each_record_by_its_first_asset() -> None:
    assert summary(records_for("primary_asset")) == [
        (0, "out", b"ETH", False),
        (1, "dlq", None, False),
        # No asset: the tweet id, so no-asset posts spread over partitions.
        (2, "out", b"t2", False),
        (3, "out", b"SOL", False),
    ]


def test_fanout_makes_one_record_per_asset_with_the_same_value() -> None:
    records = records_for("asset_fanout")
    assert summary(records) == [
        (0, "out", b"ETH", False),
        (0, "out", b"BTC", True),
        (1, "dlq", None, False),
        (2, "out", b"t2", False),
        (3, "out", b"SOL", False),
    ]
    assert records[0].value == records[1].value
    value = SentimentOut.model_validate_json(records[0].value)
    assert value.assets == ["ETH", "BTC"]
    assert value.asset_map_version == EXTRACTOR.version
    # Exactly one non-copy record per input: what "one in, one out" counts.
    assert [r.source.offset for r in records if not r.fanout_copy] == [0, 1, 2, 3]


def test_keyed_records_leaves_dead_letter_keys_and_too_large_keeps_the_copy_mark() -> None:
    base = _record(7)
    ethbtc = keyed_records(base, ["ETH", "BTC"], "asset_fanout")
    assert [(r.key, r.fanout_copy) for r in ethbtc] == [(b"ETH", False), (b"BTC", True)]
    assert keyed_records(base, [], "asset_fanout") == [base]
    assert too_large_record(ethbtc[1], "dlq", NOW).fanout_copy
    assert too_large_record(ethbtc[1], "dlq", NOW).outcome is Outcome.TOO_LARGE


class ManualProducer:
    """Delivers exactly the records the test says, in the order it says."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[Any, Any], None]] = []

    def produce(self, topic: str, value: bytes, *, key: bytes | None, on_delivery: Any) -> None:
        self.callbacks.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        return 0

    def deliver(self, index: int) -> None:
        self.callbacks[index](None, None)


@pytest.mark.parametrize("order", [[0, 1, 2], [1, 2, 0], [2, 0, 1]])
def test_a_fanned_out_input_is_committed_only_after_all_its_records(order: list[int]) -> None:
    producer, consumer = ManualProducer(), FakeConsumer()
    alo = AtLeastOnce(
        producer,  # type: ignore[arg-type]
        consumer,  # type: ignore[arg-type]
        Health(StreamMetrics(), "m"),
        dead_letter_topic="dlq",
        commit_interval_s=0.0,
    )
    alo.consumed(_inbound(0, b"{}"))
    records = keyed_records(_record(0), ["ETH", "BTC", "SOL"], "asset_fanout")
    alo.publish(Batch(seq=1, items=[]), records)
    for n, index in enumerate(order):
        alo.commit(sync=True)
        assert consumer.commits == [], f"committed after {n} of 3 records"
        producer.deliver(index)
    alo.commit(sync=True)
    assert consumer.commits == [{("tweets", 0): 1}]
    assert alo.health.counters.outputs_acked == 3


def test_health_counts_outcomes_per_input_not_per_fanned_record() -> None:
    health = Health(StreamMetrics(), "m")
    records = keyed_records(_record(0), ["ETH", "BTC"], "asset_fanout")
    health.outcomes(r for r in records if not r.fanout_copy)
    assert health.counters.classified == 1
    assert json.loads(records[1].value)["id"] == "t0"
