"""Per-asset output on the session broker (issue 12): serve fills `assets`, keys records by tweet
id, primary asset or one record per asset, commits a fanned-out input only once all its records
are in, and the downstream subscriber gets each wanted input once."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from ops.settings import KafkaSettings, OutputKey
from schemas.messages import SentimentOut, Status
from stream.apps.subscriber import SentimentSubscriber
from stream.apps.tail import tail
from stream.inference import SentimentModel, load_model
from tests.integration.stream_helpers import (
    SESSION_TIMEOUT_MS,
    WorkerThread,
    produce,
    stream_settings,
)
from tests.tiny_model import make_tiny_artifact

pytestmark = pytest.mark.integration

# (text, the assets the built-in map finds in it, primary first)
POSTS: list[tuple[str, list[str]]] = [
    ("$ETH.X breaking out, Bitcoin lagging behind today", ["ETH", "BTC"]),
    ("Bitcoin slides as $ETH falls and $SOL.X follows", ["ETH", "BTC", "SOL"]),
    ("no coin in this one, just the weather", []),
    ("$BTC to the moon", ["BTC"]),
    ("", []),  # skipped (empty): assets are extracted for skipped records too
    ("$100 off, check out this link", []),
    ("$DOGE.X and $SHIB.X pumping together", ["DOGE", "SHIB"]),
]
BAD = b"{not json"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SentimentModel:
    return load_model(make_tiny_artifact(tmp_path_factory.mktemp("tiny")), device="cpu")


def read_keyed(kafka: KafkaSettings, topic: str, count: int, timeout: float) -> list[Any]:
    """(key, value) of the first `count` committed records of `topic`, then whatever follows."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from ops.kafka import list_topics

    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": f"keyed-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    parts = list_topics(kafka)[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(parts)])
    got: list[tuple[str | None, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=500, timeout=0.5)
            for msg in batch:
                if msg.error() is None and msg.value() is not None:
                    key = msg.key()
                    got.append((None if key is None else key.decode(), json.loads(msg.value())))
            if len(got) >= count and not batch:
                break
    finally:
        consumer.close()
    assert len(got) >= count, f"{len(got)} of {count} records in {topic}"
    return got


def committed_offset(kafka: KafkaSettings, group: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": group})
    try:
        (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return int(tp.offset)
    finally:
        consumer.close()


def expected_keys(output_key: OutputKey, tweet_id: str, assets: list[str]) -> list[str]:
    if output_key == "tweet_id" or not assets:
        return [tweet_id]
    return [assets[0]] if output_key == "primary_asset" else list(assets)


@pytest.mark.parametrize(
    ("output_key", "guarantee"),
    [
        ("tweet_id", "at_least_once"),
        ("primary_asset", "at_least_once"),
        ("asset_fanout", "at_least_once"),
        ("asset_fanout", "exactly_once"),
    ],
)
def test_serve_keys_output_by_asset_and_counts_inputs_once(
    kafka_settings: KafkaSettings,
    make_topic: Callable[..., str],
    model: SentimentModel,
    output_key: OutputKey,
    guarantee: str,
) -> None:
    inp, out, dlq = make_topic("in"), make_topic("out", 3), make_topic("dlq")
    ids = [f"a{i}" for i in range(len(POSTS))]
    values = [
        json.dumps({"id": i, "text": t}).encode() for i, (t, _) in zip(ids, POSTS, strict=True)
    ]
    produce(kafka_settings, inp, [*values, BAD], partition=0)
    group = f"g-{inp}"
    settings = stream_settings(
        kafka_settings,
        inp,
        out,
        dlq,
        group=group,
        output_key=output_key,
        processing_guarantee=guarantee,
    )
    counters = WorkerThread(settings, model, max_messages=len(values) + 1).start().join(90)

    # One outcome per input in every mode; records per input only with fan-out.
    assert counters.consumed == len(values) + 1
    assert counters.classified + counters.skipped + counters.dead_lettered == counters.consumed
    assert counters.dead_lettered == 1
    expected = {
        i: expected_keys(output_key, i, assets) for i, (_, assets) in zip(ids, POSTS, strict=True)
    }
    n_records = sum(len(keys) for keys in expected.values())
    assert counters.outputs_acked == n_records + 1
    # Every record of every input was delivered before the offsets moved past the inputs.
    assert committed_offset(kafka_settings, group, inp) == len(values) + 1

    got = read_keyed(kafka_settings, out, n_records, 20)
    assert len(got) == n_records, "no duplicates on a run without failures"
    keys_by_id: dict[str, list[str | None]] = {}
    for key, value in got:
        record = SentimentOut.model_validate(value)
        wanted = dict(zip(ids, (a for _, a in POSTS), strict=True))[record.id]
        assert record.assets == wanted, record.text
        assert record.asset_map_version == "1"
        keys_by_id.setdefault(record.id, []).append(key)
    assert {i: sorted(k or "" for k in keys) for i, keys in keys_by_id.items()} == {
        i: sorted(keys) for i, keys in expected.items()
    }
    statuses = Counter(SentimentOut.model_validate(v).status for _, v in got)
    assert statuses[Status.SKIPPED] >= 1
    (letter,) = read_keyed(kafka_settings, dlq, 1, 10)
    assert letter[1]["error_kind"] == "invalid_json"


def test_subscriber_and_tail_get_each_wanted_input_once_from_a_fanned_out_topic(
    kafka_settings: KafkaSettings, make_topic: Callable[..., str], model: SentimentModel
) -> None:
    inp, out, dlq = make_topic("in"), make_topic("out", 3), make_topic("dlq")
    ids = [f"s{i}" for i in range(len(POSTS))]
    values = [
        json.dumps({"id": i, "text": t}).encode() for i, (t, _) in zip(ids, POSTS, strict=True)
    ]
    produce(kafka_settings, inp, values, partition=0)
    settings = stream_settings(
        kafka_settings, inp, out, dlq, group=f"g-{inp}", output_key="asset_fanout"
    )
    WorkerThread(settings, model, max_messages=len(values)).start().join(90)

    fast = kafka_settings.model_copy(
        update={"extra": {"session.timeout.ms": SESSION_TIMEOUT_MS, "fetch.wait.max.ms": 100}}
    )
    want = [i for i, (_, assets) in zip(ids, POSTS, strict=True) if "BTC" in assets]
    assert len(want) == 3
    got: list[str] = []
    with SentimentSubscriber(
        fast,
        out,
        group_id=f"desk-{inp}",
        assets=["btc"],
        output_key="asset_fanout",
        from_beginning=True,
    ) as sub:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(got) < len(want):
            got += [r.record.id for r in sub.poll(0.5)]
        # Whatever else is queued (a duplicate would show here).
        got += [r.record.id for r in sub.poll(1.0)]
        sub.commit()
        assert sub.stats.invalid == 0
    assert sorted(got) == sorted(want)

    printed = io.StringIO()
    shown = tail(
        kafka_settings,
        out,
        from_beginning=True,
        timeout_s=5,
        assets=["BTC"],
        output_key="asset_fanout",
        out=printed,
    )
    assert sorted(line.split()[0] for line in printed.getvalue().splitlines()) == sorted(want)
    n_records = sum(max(1, len(assets)) for _, assets in POSTS)
    assert (shown.total, shown.hidden) == (len(want), n_records - len(want))
