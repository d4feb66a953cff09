"""The per-micro-batch work of `serve` (clean -> tokenize -> plan -> forward -> records) and the
two-stage thread pipeline that overlaps CPU preparation of batch N+1 with the forward passes of
batch N.

Threads: the Kafka thread (`stream.consumer`) submits batches and collects finished ones; one
`prep` thread cleans, tokenizes and length-plans (`plan_batches_by_cost`); one `infer` thread
runs the forward passes. At most `max_in_flight` (2) batches are inside: one preparing or
prepared, one on the device. Queues are
FIFO and there is a single thread per stage, so batches come out in the order they went in,
which is what lets exactly-once commit each batch's offsets in its own transaction.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import numpy as np

from ops.logging import get_logger
from schemas.messages import DeadLetter, Label, SentimentOut
from stream.core import (
    CleanResultLike,
    Inbound,
    OutRecord,
    TextPipelineLike,
    internal_error,
    sentiment_record,
    to_out_record,
)
from stream.core.planning import Encoded, softmax

log = get_logger(__name__)


class ModelLike(Protocol):
    """The part of `stream.inference.SentimentModel` serving uses (fakes implement it in tests)."""

    @property
    def pipeline(self) -> TextPipelineLike: ...
    @property
    def temperature(self) -> float: ...
    @property
    def model_version(self) -> str: ...
    @property
    def labels(self) -> Sequence[Label]: ...

    def encode(self, texts: Sequence[str]) -> Encoded: ...
    def iter_planned(
        self, encoded: Encoded, batch_size: int, *, by_cost: bool = False
    ) -> Iterator[tuple[list[int], list[list[int]]]]: ...
    def forward_logits(self, batch_ids: Sequence[Sequence[int]]) -> np.ndarray: ...


class FatalBatchError(RuntimeError):
    """Every input of a batch failed the same step: a broken model or device, not bad input.
    Dead-lettering the whole stream would hide it, so the worker stops without committing."""


@dataclass
class Batch:
    seq: int
    items: list[Inbound]
    epoch: int = 0
    submitted_at: float = field(default_factory=time.monotonic)
    clean: dict[int, CleanResultLike] = field(default_factory=dict)  # item index -> result
    kept: list[int] = field(default_factory=list)  # item indices that go to the model
    encoded: Encoded = field(default_factory=lambda: Encoded([]))
    plan: list[tuple[list[int], list[list[int]]]] = field(default_factory=list)
    probs: np.ndarray | None = None  # rows aligned with `kept`
    prep_seconds: float = 0.0
    inference_seconds: float = 0.0
    error: BaseException | None = None


def _clean_one(pipeline: TextPipelineLike, text: str) -> CleanResultLike:
    return pipeline.process_batch([text])[0]


def prepare(batch: Batch, model: ModelLike, batch_size: int) -> Batch:
    """Clean, tokenize and length-plan a batch (CPU work; runs one batch ahead of the device).

    A pipeline or tokenizer exception on the whole batch is retried item by item so that one
    poisonous text becomes one INTERNAL_ERROR dead letter instead of stopping the stream.
    """
    start = time.perf_counter()
    tweet_idx = [i for i, item in enumerate(batch.items) if item.tweet is not None]
    texts = [batch.items[i].tweet.text for i in tweet_idx]  # type: ignore[union-attr]
    try:
        results = list(model.pipeline.process_batch(texts)) if texts else []
        if len(results) != len(texts):
            raise RuntimeError(f"text pipeline returned {len(results)} results for {len(texts)}")
        batch.clean = dict(zip(tweet_idx, results, strict=True))
    except Exception as exc:
        log.warning("text_pipeline_batch_failed", error=repr(exc), size=len(texts))
        failures = 0
        for i, text in zip(tweet_idx, texts, strict=True):
            try:
                batch.clean[i] = _clean_one(model.pipeline, text)
            except Exception as one:
                failures += 1
                batch.items[i] = internal_error(batch.items[i], f"text pipeline failed: {one!r}")
        if texts and failures == len(texts) and len(texts) > 1:
            raise FatalBatchError(f"the text pipeline fails on every input: {exc!r}") from exc

    kept = [i for i, res in batch.clean.items() if res.kept and res.text]
    kept_texts = [batch.clean[i].text or "" for i in kept]
    try:
        encoded = model.encode(kept_texts)
    except Exception as exc:
        log.warning("tokenizer_batch_failed", error=repr(exc), size=len(kept_texts))
        ids: list[list[int]] = []
        ok: list[int] = []
        for i, text in zip(kept, kept_texts, strict=True):
            try:
                ids.append(model.encode([text]).input_ids[0])
                ok.append(i)
            except Exception as one:
                batch.items[i] = internal_error(batch.items[i], f"tokenizer failed: {one!r}")
                batch.clean.pop(i, None)
        if kept and not ok and len(kept) > 1:
            raise FatalBatchError(f"the tokenizer fails on every input: {exc!r}") from exc
        kept, encoded = ok, Encoded(ids)
    batch.kept = kept
    batch.encoded = encoded
    batch.plan = list(model.iter_planned(encoded, batch_size, by_cost=True)) if kept else []
    batch.prep_seconds = time.perf_counter() - start
    return batch


def infer(batch: Batch, model: ModelLike, debug_delay_s: float = 0.0) -> Batch:
    """Forward passes over the planned groups; probabilities in `batch.probs`."""
    if debug_delay_s > 0:
        # Test-only: the worker is provably outside any transaction while it sleeps here.
        log.info("debug_inference_delay", seq=batch.seq, seconds=debug_delay_s)
        time.sleep(debug_delay_s)
    start = time.perf_counter()
    n_labels = len(model.labels)
    logits = np.zeros((len(batch.kept), n_labels), dtype=np.float64)
    failed: set[int] = set()
    for rows, ids in batch.plan:
        try:
            logits[rows] = model.forward_logits(ids)
        except Exception as exc:
            # CUDA OOM was already split and retried inside forward_logits; whatever is left is
            # tried one input at a time so a single bad input cannot take its neighbours along.
            log.warning("forward_failed", error=repr(exc), size=len(ids))
            for row, one in zip(rows, ids, strict=True):
                try:
                    logits[row] = model.forward_logits([one])[0]
                except Exception as exc_one:
                    failed.add(row)
                    item_idx = batch.kept[row]
                    batch.items[item_idx] = internal_error(
                        batch.items[item_idx], f"inference failed: {exc_one!r}"
                    )
    if failed and len(failed) == len(batch.kept) and len(failed) > 1:
        raise FatalBatchError("the model fails on every input of the batch")
    if failed:
        keep_rows = [r for r in range(len(batch.kept)) if r not in failed]
        for row in failed:
            batch.clean.pop(batch.kept[row], None)
        batch.kept = [batch.kept[r] for r in keep_rows]
        logits = logits[keep_rows]
    batch.probs = softmax(logits, model.temperature) if len(batch.kept) else np.zeros((0, 2))
    batch.inference_seconds = time.perf_counter() - start
    return batch


def build_records(
    batch: Batch,
    *,
    labels: Sequence[Label],
    model_version: str,
    include_text: bool,
    output_topic: str,
    dead_letter_topic: str,
    now: datetime | None = None,
) -> list[OutRecord]:
    """Exactly one record per input of the batch, in input order."""
    processed = now or datetime.now(UTC)
    row_of = {item_idx: row for row, item_idx in enumerate(batch.kept)}
    probs = batch.probs
    records: list[OutRecord] = []
    for i, item in enumerate(batch.items):
        value: SentimentOut | DeadLetter
        if item.dead_letter is not None:
            records.append(to_out_record(item, item.dead_letter, dead_letter_topic))
            continue
        clean = batch.clean.get(i)
        if clean is None:  # defensive: prepare() gives every surviving tweet a result
            bad = internal_error(item, "no text pipeline result for this input")
            records.append(to_out_record(bad, bad.dead_letter, dead_letter_topic))  # type: ignore[arg-type]
            continue
        row = row_of.get(i)
        p = None if row is None or probs is None else probs[row].tolist()
        try:
            value = sentiment_record(
                item,
                clean,
                p,
                labels=labels,
                model_version=model_version,
                include_text=include_text,
                processed_time=processed,
            )
        except Exception as exc:
            bad = internal_error(item, f"cannot build the output record: {exc!r}")
            records.append(to_out_record(bad, bad.dead_letter, dead_letter_topic))  # type: ignore[arg-type]
            continue
        records.append(to_out_record(item, value, output_topic))
    return records


_STOP = object()


class BatchPipeline:
    """prep thread -> infer thread, FIFO, at most `max_in_flight` batches inside.

    Stage exceptions do not kill the threads: they are attached to the batch (`batch.error`) and
    the Kafka thread decides what they mean.
    """

    def __init__(
        self,
        prep: Callable[[Batch], Batch],
        run: Callable[[Batch], Batch],
        max_in_flight: int = 2,
        infer_thread_init: Callable[[], None] | None = None,
    ) -> None:
        self.max_in_flight = max_in_flight
        self._prep_q: queue.Queue[object] = queue.Queue()
        self._infer_q: queue.Queue[object] = queue.Queue()
        self._done_q: queue.Queue[object] = queue.Queue()
        self._in_flight = 0
        self._threads = [
            threading.Thread(
                target=self._stage, args=(prep, self._prep_q, self._infer_q), name="stream-prep"
            ),
            threading.Thread(
                target=self._stage,
                args=(run, self._infer_q, self._done_q, infer_thread_init),
                name="stream-infer",
            ),
        ]
        for t in self._threads:
            t.daemon = True
            t.start()

    @staticmethod
    def _stage(
        fn: Callable[[Batch], Batch],
        inbox: queue.Queue[object],
        outbox: queue.Queue[object],
        init: Callable[[], None] | None = None,
    ) -> None:
        if init is not None:
            init()
        while True:
            job = inbox.get()
            if job is _STOP:
                outbox.put(_STOP)
                return
            assert isinstance(job, Batch)
            if job.error is None:
                try:
                    fn(job)
                except BaseException as exc:
                    job.error = exc
                    log.error(
                        "batch_stage_failed",
                        seq=job.seq,
                        error=repr(exc),
                        trace=traceback.format_exc(limit=5),
                    )
            outbox.put(job)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def can_accept(self) -> bool:
        return self._in_flight < self.max_in_flight

    def submit(self, batch: Batch) -> None:
        self._in_flight += 1
        self._prep_q.put(batch)

    def poll_done(self, timeout: float = 0.0) -> Batch | None:
        """The next finished batch, in submission order, or None."""
        if self._in_flight == 0:
            return None
        try:
            job = self._done_q.get(timeout=timeout) if timeout > 0 else self._done_q.get_nowait()
        except queue.Empty:
            return None
        if not isinstance(job, Batch):
            return None
        self._in_flight -= 1
        return job

    def close(self, timeout: float = 5.0) -> None:
        self._prep_q.put(_STOP)
        for t in self._threads:
            t.join(timeout)
