"""Per-batch work of `serve` with a fake model and pipeline: records, failure isolation, threads."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ops.settings import InputFormat
from schemas.messages import DeadLetter, DeadLetterKind, Label, SentimentOut, SkipReason, Status
from stream.core import Inbound, decode_message
from stream.core.planning import Encoded, plan_batches, plan_batches_by_cost
from stream.core.steps import Batch, FatalBatchError, build_records, infer, prepare
from stream.serve.pipeline import BatchPipeline
from tests.unit.test_stream_core import FakeMessage

NOW = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Clean:
    text: str | None
    skip_reason: SkipReason | None = None
    language: str | None = "en"

    @property
    def kept(self) -> bool:
        return self.skip_reason is None


@dataclass
class FakePipeline:
    poison: str = "POISON"
    broken: bool = False

    def process_batch(self, texts: list[str]) -> list[Clean]:
        if self.broken or any(self.poison in t for t in texts):
            raise RuntimeError("pipeline bug")
        out = []
        for t in texts:
            if not t.strip():
                out.append(Clean(None, SkipReason.EMPTY_AFTER_CLEANING, None))
            elif t.startswith("hola"):
                out.append(Clean(None, SkipReason.NON_ENGLISH, "es"))
            else:
                out.append(Clean(t.lower()))
        return out


@dataclass
class FakeModel:
    """A `Backend` (plus the artifact's text pipeline): logit for POSITIVE = number of words,
    NEGATIVE = 0; a 13-word text breaks the model."""

    pipeline: FakePipeline = field(default_factory=FakePipeline)
    temperature: float = 1.0
    model_version: str = "fake-v1"
    name: str = "fake"
    labels: Sequence[Label] = (Label.NEGATIVE, Label.POSITIVE)
    # A large per-call overhead makes the cost planner fill groups like plan_batches.
    call_overhead_tokens: float = 1000.0
    forward_batches: list[list[int]] = field(default_factory=list)
    broken: bool = False

    def init_thread(self, threads: int | None) -> None:
        pass

    def encode(self, texts: Sequence[str]) -> Encoded:
        return Encoded([[1] * len(t.split()) for t in texts])

    def forward_logits(self, batch_ids: Sequence[Sequence[int]]) -> np.ndarray:
        self.forward_batches.append([len(x) for x in batch_ids])
        if self.broken or any(len(x) == 13 for x in batch_ids):
            raise RuntimeError("model bug")
        return np.array([[0.0, float(len(x)) / 4] for x in batch_ids])


def items(*values: bytes) -> list[Inbound]:
    return [
        decode_message(FakeMessage(v, _offset=i), InputFormat(), 10_000, NOW, timestamp_ms=None)
        for i, v in enumerate(values)
    ]


def tweet(i: int, text: str) -> bytes:
    return json.dumps({"id": f"t{i}", "text": text}).encode()


def run_all(batch: Batch, model: FakeModel, batch_size: int = 2) -> list[SentimentOut | DeadLetter]:
    prepare(batch, model.pipeline, model, batch_size)
    infer(batch, model)
    records = build_records(
        batch,
        labels=model.labels,
        model_version=model.model_version,
        include_text=True,
        output_topic="out",
        dead_letter_topic="dlq",
        now=NOW,
    )
    assert [r.source.offset for r in records] == [it.offset for it in batch.items]
    return [
        SentimentOut.model_validate_json(r.value)
        if r.topic == "out"
        else DeadLetter.model_validate_json(r.value)
        for r in records
    ]


def test_one_record_per_input_in_order() -> None:
    model = FakeModel()
    batch = Batch(
        seq=1,
        items=items(
            tweet(0, "eth up"),
            b"not json",
            tweet(2, "hola amigos"),
            tweet(3, "  "),
            tweet(4, "one two three four five"),
            tweet(5, "a b c"),
        ),
    )
    out = run_all(batch, model)
    assert [type(o).__name__ for o in out] == [
        "SentimentOut",
        "DeadLetter",
        "SentimentOut",
        "SentimentOut",
        "SentimentOut",
        "SentimentOut",
    ]
    first, _, spanish, empty, long, short = out
    assert isinstance(first, SentimentOut)
    assert first.status is Status.CLASSIFIED
    assert first.p_positive == pytest.approx(1 / (1 + np.exp(-0.5)))
    assert first.text == "eth up"
    assert isinstance(spanish, SentimentOut)
    assert spanish.skip_reason is SkipReason.NON_ENGLISH
    assert isinstance(empty, SentimentOut)
    assert empty.skip_reason is SkipReason.EMPTY_AFTER_CLEANING
    assert isinstance(long, SentimentOut)
    assert isinstance(short, SentimentOut)
    assert long.p_positive is not None
    assert short.p_positive is not None
    assert long.p_positive > short.p_positive
    # Length-planned, longest first; each group is padded only to its own longest text.
    assert model.forward_batches == [[5], [3, 2]]


def test_poisonous_text_becomes_one_internal_error() -> None:
    model = FakeModel()
    batch = Batch(seq=1, items=items(tweet(0, "fine text"), tweet(1, "POISON"), tweet(2, "ok")))
    out = run_all(batch, model)
    assert isinstance(out[1], DeadLetter)
    assert out[1].error_kind is DeadLetterKind.INTERNAL_ERROR
    assert "pipeline" in out[1].error_message
    assert isinstance(out[0], SentimentOut)
    assert out[0].status is Status.CLASSIFIED
    assert isinstance(out[2], SentimentOut)


def test_input_that_breaks_the_model_becomes_one_internal_error() -> None:
    model = FakeModel()
    thirteen = " ".join(["w"] * 13)
    batch = Batch(seq=1, items=items(tweet(0, thirteen), tweet(1, "x y"), tweet(2, "z")))
    out = run_all(batch, model, batch_size=8)
    assert isinstance(out[0], DeadLetter)
    assert out[0].error_kind is DeadLetterKind.INTERNAL_ERROR
    assert "inference" in out[0].error_message
    assert all(isinstance(o, SentimentOut) and o.status is Status.CLASSIFIED for o in out[1:])


def test_a_broken_pipeline_or_model_is_fatal_not_dead_lettered() -> None:
    batch = Batch(seq=1, items=items(tweet(0, "a"), tweet(1, "b")))
    broken = FakeModel(pipeline=FakePipeline(broken=True))
    with pytest.raises(FatalBatchError):
        prepare(batch, broken.pipeline, broken, 4)
    model = FakeModel(broken=True)
    batch = Batch(seq=2, items=items(tweet(0, "a"), tweet(1, "b")))
    prepare(batch, model.pipeline, model, 4)
    with pytest.raises(FatalBatchError):
        infer(batch, model)


def test_all_dead_letters_batch_needs_no_model() -> None:
    model = FakeModel()
    out = run_all(Batch(seq=1, items=items(b"[]", b"\xff")), model)
    assert [o.error_kind for o in out if isinstance(o, DeadLetter)] == [
        DeadLetterKind.NOT_AN_OBJECT,
        DeadLetterKind.INVALID_UTF8,
    ]
    assert model.forward_batches == []


def test_pipeline_threads_keep_submission_order_and_report_errors() -> None:
    gate = threading.Event()

    def prep(b: Batch) -> Batch:
        # Batch 1 is held in preparation until the test saw that batch 2, behind it, did not
        # overtake it: FIFO is shown by a condition, not by racing sleeps.
        if b.seq == 1:
            assert gate.wait(10)
        if b.seq == 3:
            raise ValueError("prep failed")
        return b

    def run(b: Batch) -> Batch:
        return b

    pipe = BatchPipeline(prep, run, max_in_flight=2)
    try:
        pipe.submit(Batch(seq=1, items=[]))
        pipe.submit(Batch(seq=2, items=[]))
        assert not pipe.can_accept()
        assert pipe.poll_done(0.2) is None
        gate.set()
        done: list[Batch] = []
        seq = 2
        deadline = time.monotonic() + 10
        while len(done) < 6 and time.monotonic() < deadline:
            while seq < 6 and pipe.can_accept():
                seq += 1
                pipe.submit(Batch(seq=seq, items=[]))
            assert pipe.in_flight <= 2
            got = pipe.poll_done(0.05)
            if got is not None:
                done.append(got)
        assert [b.seq for b in done] == [1, 2, 3, 4, 5, 6]
        assert isinstance(done[2].error, ValueError)
        assert all(b.error is None for b in done if b.seq != 3)
        assert all(b.prep_seconds >= 0.0 for b in done)
        assert pipe.poll_done() is None
    finally:
        pipe.close()


def _cost(lengths: list[int], plan: list[list[int]], overhead: float) -> float:
    return sum(overhead + len(g) * max(lengths[i] for i in g) for g in plan)


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=128), max_size=200),
    batch_size=st.integers(min_value=1, max_value=64),
    overhead=st.sampled_from([0.0, 48.0, 4096.0]),
)
def test_cost_planner_is_a_valid_plan_never_worse_than_plan_batches(
    lengths: list[int], batch_size: int, overhead: float
) -> None:
    plan = plan_batches_by_cost(lengths, batch_size, overhead)
    flat = [i for g in plan for i in g]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(1 <= len(g) <= batch_size for g in plan)
    # The same longest-first order as plan_batches, cut at different points.
    assert flat == [i for g in plan_batches(lengths, batch_size) for i in g]
    baseline = plan_batches(lengths, batch_size)
    assert _cost(lengths, plan, overhead) <= _cost(lengths, baseline, overhead) + 1e-6


def test_cost_planner_splits_mixed_lengths_and_keeps_full_groups_on_gpu_costs() -> None:
    lengths = [128] * 2 + [20] * 62
    assert [len(g) for g in plan_batches(lengths, 64)] == [64]
    assert [len(g) for g in plan_batches_by_cost(lengths, 64, 48.0)] == [2, 62]
    assert [len(g) for g in plan_batches_by_cost(lengths, 64, 1e6)] == [64]
    assert plan_batches_by_cost([], 8, 48.0) == []
    with pytest.raises(ValueError, match="batch_size"):
        plan_batches_by_cost([1], 0, 48.0)
