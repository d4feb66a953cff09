"""serve in-process (StreamWorker in a thread, as the demo runs it) against the session broker."""

from __future__ import annotations

import csv
import io
import itertools
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ops.kafka import ConfluentClients
from ops.settings import KafkaSettings
from schemas.messages import DeadLetter, DeadLetterKind, Label, SentimentOut, SkipReason, Status
from schemas.text import TextConfig
from stream.apps.replay import replay
from stream.apps.tail import tail
from stream.inference import SentimentModel, load_model
from tests.integration.conftest import TANSU_READ_COMMITTED
from tests.integration.stream_helpers import (
    Reader,
    SlowBackend,
    WorkerThread,
    check_one_per_input,
    produce,
    stream_settings,
    tweets,
    wait_for,
)
from tests.tiny_model import make_tiny_artifact

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SentimentModel:
    return load_model(make_tiny_artifact(tmp_path_factory.mktemp("tiny")), device="cpu")


@pytest.fixture(scope="module")
def lang_model(tmp_path_factory: pytest.TempPathFactory) -> SentimentModel:
    art = make_tiny_artifact(
        tmp_path_factory.mktemp("tiny-lang"), text=TextConfig(lang_backend="py3langid")
    )
    return load_model(art, device="cpu")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_replay_serve_tail_end_to_end(
    kafka_settings: KafkaSettings,
    make_topic: Callable[..., str],
    model: SentimentModel,
    tmp_path: Path,
    shared_data: Callable[[str], Path],
) -> None:
    labeled = shared_data("stocktwits_eth_2022_labeled.csv")
    # A slice of the real stream (with labels) in a temp file, never inside the repo.
    with labeled.open(encoding="utf-8", newline="") as handle:
        rows = list(itertools.islice(csv.reader(handle), 151))
    sliced = tmp_path / "slice.csv"
    with sliced.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    inp, out, dlq = make_topic("in", 3), make_topic("out"), make_topic("dlq")
    summary = replay(kafka_settings, sliced, inp, limit=150, progress=False)
    assert summary.sent == 150
    assert summary.bad_rows == 0

    settings = stream_settings(kafka_settings, inp, out, dlq, group=f"g-{inp}")
    runner = WorkerThread(settings, model, max_messages=150).start()
    wait_for(lambda: runner.worker.metrics_port is not None, 30, "metrics server")
    base = f"http://127.0.0.1:{runner.worker.metrics_port}"
    assert _get(base + "/healthz")[0] == 200
    wait_for(lambda: _get(base + "/readyz")[0] == 200 or runner.result is not None, 30, "ready")
    status, body = _get(base + "/metrics")
    assert status == 200
    assert b"cryptosent_stream_consumed_total" in body
    assert b"cryptosent_stream_end_to_end_latency_seconds_bucket" in body
    counters = runner.join(60)
    assert counters.consumed == 150
    assert counters.outputs_acked == 150

    reader = Reader(kafka_settings, [out, dlq])
    reader.settle(counters.outputs_acked, 20)
    inputs = [
        (inp, int(r["source"]["partition"]), int(r["source"]["offset"])) for r in reader.records
    ]
    check_one_per_input(reader, inputs, allow_duplicates=False)
    assert {r["_topic"] for r in reader.records} == {out}
    outs = [
        SentimentOut.model_validate({k: v for k, v in r.items() if k != "_topic"})
        for r in reader.records
    ]
    assert {o.model_version for o in outs} == {model.model_version}
    ids = [row[0] for row in rows[1:]]
    assert sorted(o.id for o in outs) == sorted(ids)
    classified = [o for o in outs if o.status is Status.CLASSIFIED]
    assert len(classified) >= 140  # lang filter is off in this artifact; only blanks skip
    for o in classified:
        assert o.label in (Label.POSITIVE, Label.NEGATIVE)
        assert o.p_positive is not None
        assert o.p_negative is not None
        assert abs(o.p_positive + o.p_negative - 1) < 1e-6
        assert o.label is (Label.POSITIVE if o.p_positive >= 0.5 else Label.NEGATIVE)
    assert all(o.reference_label in (Label.POSITIVE, Label.NEGATIVE) for o in outs)
    assert all(o.text for o in outs)
    assert all(o.event_time is not None for o in outs)
    reader.close()

    printed = io.StringIO()
    result = tail(
        kafka_settings, out, from_beginning=True, max_records=150, timeout_s=15, out=printed
    )
    assert result.total == 150
    assert printed.getvalue().count("\n") == 150
    assert set(result.counts) <= {"POSITIVE", "NEGATIVE", "skipped:empty_after_cleaning"}


def test_malformed_inputs_are_dead_lettered_and_the_stream_goes_on(
    kafka_settings: KafkaSettings, make_topic: Callable[..., str], model: SentimentModel
) -> None:
    inp, out, dlq = make_topic("in"), make_topic("out"), make_topic("dlq")
    bad: list[tuple[bytes | None, DeadLetterKind]] = [
        (b"\xff\xfe\x00broken", DeadLetterKind.INVALID_UTF8),
        (b"{not json", DeadLetterKind.INVALID_JSON),
        (None, DeadLetterKind.INVALID_JSON),
        (b'["a", "list"]', DeadLetterKind.NOT_AN_OBJECT),
        (b'{"id": "no-text"}', DeadLetterKind.MISSING_FIELD),
        (b'{"text": "no id"}', DeadLetterKind.MISSING_FIELD),
        (b'{"id": 1.5, "text": "float id"}', DeadLetterKind.WRONG_TYPE),
        (b'{"id": "x", "text": 42}', DeadLetterKind.WRONG_TYPE),
        (json.dumps({"id": "big", "text": "a" * 3000}).encode(), DeadLetterKind.OVERSIZED),
    ]
    _, good_before = tweets(3, "before")
    _, good_after = tweets(5, "after")
    values = [*good_before, *(v for v, _ in bad), *good_after]
    sources = produce(kafka_settings, inp, values, partition=0)
    settings = stream_settings(
        kafka_settings, inp, out, dlq, group=f"g-{inp}", max_message_bytes=1024
    )
    counters = WorkerThread(settings, model, max_messages=len(values)).start().join(60)
    assert counters.dead_lettered == len(bad)
    assert counters.classified == len(good_before) + len(good_after)

    reader = Reader(kafka_settings, [out, dlq])
    reader.settle(counters.outputs_acked, 20)
    check_one_per_input(reader, sources, allow_duplicates=False)
    by_offset = {r["source"]["offset"]: r for r in reader.records}
    for i, (_, kind) in enumerate(bad, start=len(good_before)):
        record = by_offset[sources[i][2]]
        assert record["_topic"] == dlq
        letter = DeadLetter.model_validate({k: v for k, v in record.items() if k != "_topic"})
        assert letter.error_kind is kind, (i, letter.error_message)
    for s in sources[-len(good_after) :]:
        record = by_offset[s[2]]
        assert record["_topic"] == out
        assert record["status"] == "classified"
        assert record["id"].startswith("after")
    reader.close()


def test_non_english_and_empty_texts_are_skipped_with_their_reason(
    kafka_settings: KafkaSettings, make_topic: Callable[..., str], lang_model: SentimentModel
) -> None:
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "non_english_crypto.txt"
    spanish = [line for line in fixtures.read_text(encoding="utf-8").splitlines() if line][:3]
    cases: list[tuple[str, SkipReason | None]] = [
        ("Bitcoin is breaking out today, buying more before the rally continues", None),
        ("Ethereum looks terrible, I am selling everything before it crashes further", None),
        *((text, SkipReason.NON_ENGLISH) for text in spanish),
        ("", SkipReason.EMPTY_AFTER_CLEANING),
        ("@someone https://t.co/abc123", SkipReason.EMPTY_AFTER_CLEANING),
        ("ok", SkipReason.TOO_SHORT),
    ]
    inp, out, dlq = make_topic("in"), make_topic("out"), make_topic("dlq")
    values = [json.dumps({"id": f"c{i}", "text": t}).encode() for i, (t, _) in enumerate(cases)]
    produce(kafka_settings, inp, values)
    settings = stream_settings(kafka_settings, inp, out, dlq, group=f"g-{inp}")
    WorkerThread(settings, lang_model, max_messages=len(values)).start().join(60)
    reader = Reader(kafka_settings, [out, dlq])
    reader.until(len(values), 20)
    got = {r["id"]: r for r in reader.records}
    for i, (text, reason) in enumerate(cases):
        record = got[f"c{i}"]
        if reason is None:
            assert record["status"] == "classified", (text, record)
            assert record["language"] == "en"
        else:
            assert record["status"] == "skipped", (text, record)
            assert record["skip_reason"] == reason.value, (text, record)
    assert got["c2"]["language"] == "es"
    reader.close()


def test_two_workers_share_partitions_and_one_takes_over(
    kafka_settings: KafkaSettings, make_topic: Callable[..., str], model: SentimentModel
) -> None:
    inp, out, dlq = make_topic("in", 2), make_topic("out"), make_topic("dlq")
    keys, values = tweets(200, "a")
    # A slowed backend, so that the survivor is mid-stream when the other one leaves.
    settings = stream_settings(
        kafka_settings, inp, out, dlq, group=f"g-{inp}", batch_size=10, batch_max_messages=10
    )
    slow = SlowBackend(model, 0.05)
    one = WorkerThread(settings, slow, model.pipeline).start()  # type: ignore[arg-type]
    two = WorkerThread(settings, slow, model.pipeline).start()  # type: ignore[arg-type]
    try:
        wait_for(
            lambda: bool(one.worker.assigned and two.worker.assigned),
            45,
            "both workers to own a partition",
        )
        assert not (set(one.worker.assigned) & set(two.worker.assigned))
        # Produced once the group has settled: produced before, the first member to join could
        # drain the topic before the second one arrives (seen on Apache Kafka under load).
        first = produce(kafka_settings, inp, values, keys)
        wait_for(
            lambda: one.worker.counters.consumed > 0 and two.worker.counters.consumed > 0,
            30,
            "both workers to consume",
        )
        stopped = one.finish(60)
        wait_for(lambda: len(two.worker.assigned) == 2, 45, "the survivor to own both partitions")
        more_keys, more_values = tweets(100, "b")
        second = produce(kafka_settings, inp, more_values, more_keys)
        reader = Reader(kafka_settings, [out, dlq])
        reader.until(300, 60)
        survivor = two.finish(60)
        # Both stopped: what they acknowledged is exactly what the topics hold.
        reader.settle(stopped.outputs_acked + survivor.outputs_acked)
    finally:
        one.stop.set()
        two.stop.set()
    duplicates = check_one_per_input(reader, first + second, allow_duplicates=True)
    assert stopped.consumed > 0
    assert survivor.consumed > 0
    # Graceful hand-over commits everything delivered: nothing should be processed twice.
    assert duplicates == 0
    reader.close()


class _FailFirstCommit:
    """A transactional producer whose first commit fails with an abortable error."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def commit_transaction(self, *args: Any) -> Any:
        if not self.failed:
            self.failed = True
            from confluent_kafka import KafkaError, KafkaException

            raise KafkaException(
                KafkaError(KafkaError._STATE, "injected failure", txn_requires_abort=True)
            )
        return self._real.commit_transaction(*args)


@pytest.mark.broker_limitation("embedded", TANSU_READ_COMMITTED)
def test_exactly_once_abort_rewinds_and_loses_nothing(
    kafka_settings: KafkaSettings, make_topic: Callable[..., str], model: SentimentModel
) -> None:
    inp, out, dlq = make_topic("in"), make_topic("out"), make_topic("dlq")
    keys, values = tweets(60)
    sources = produce(kafka_settings, inp, values, keys)
    settings = stream_settings(
        kafka_settings,
        inp,
        out,
        dlq,
        group=f"g-{inp}",
        batch_size=10,
        batch_max_messages=10,
        processing_guarantee="exactly_once",
    )
    wrappers: list[_FailFirstCommit] = []

    class Clients(ConfluentClients):
        def producer(self, conf: dict[str, Any]) -> Any:
            wrapper = _FailFirstCommit(super().producer(conf))
            wrappers.append(wrapper)
            return wrapper

    runner = WorkerThread(settings, model, idle_exit_s=2.0, clients=Clients())
    counters = runner.start().join(90)
    assert wrappers[0].failed
    assert counters.transaction_aborts == 1
    assert counters.outputs_acked == 60  # counted at commit: the aborted batch is not included
    reader = Reader(kafka_settings, [out, dlq], read_committed=True)
    reader.settle(counters.outputs_acked, 20)
    duplicates = check_one_per_input(reader, sources, allow_duplicates=True)
    assert duplicates == 0
    reader.close()


def test_output_too_large_for_the_producer_is_dead_lettered(
    kafka_settings: KafkaSettings, make_topic: Callable[..., str], model: SentimentModel
) -> None:
    inp, out, dlq = make_topic("in"), make_topic("out"), make_topic("dlq")
    long_text = "eth " * 480  # ~1.9 KB in, over 2 KB out once the record's fields are added
    values = [
        json.dumps({"id": "small", "text": "eth up"}).encode(),
        json.dumps({"id": "big", "text": long_text}).encode(),
        json.dumps({"id": "after", "text": "eth down"}).encode(),
    ]
    sources = produce(kafka_settings, inp, values, partition=0)
    kafka = kafka_settings.model_copy(update={"extra": {"message.max.bytes": 2000}})
    settings = stream_settings(kafka, inp, out, dlq, group=f"g-{inp}")
    counters = WorkerThread(settings, model, max_messages=3).start().join(60)
    assert (counters.classified, counters.dead_lettered) == (2, 1)
    reader = Reader(kafka_settings, [out, dlq])
    reader.settle(counters.outputs_acked, 20)
    check_one_per_input(reader, sources, allow_duplicates=False)
    letter = next(r for r in reader.records if r["_topic"] == dlq)
    assert letter["error_kind"] == "oversized"
    assert letter["source"]["offset"] == sources[1][2]
    reader.close()
