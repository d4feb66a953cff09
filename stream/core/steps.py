"""The per-micro-batch work of `serve`, as pure steps over a `Batch`:

    prepare        assets -> clean -> tokenize -> length-plan   (CPU; one batch ahead of the device)
    infer          forward passes -> calibrated softmax    (the backend)
    build_records  exactly one `OutRecord` per input, in input order

No threads, clocks or logging here: `stream.serve.pipeline` runs the steps on its threads, times
them, and logs what a step noted in `Batch.notes`. A failure on one input becomes one
INTERNAL_ERROR dead letter; the same failure on every input is `FatalBatchError` (a broken model
or device, not bad input).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from ops.settings import OutputKey
from schemas.messages import DeadLetter, Label, SentimentOut
from stream.core.assets import AssetExtractor
from stream.core.planning import Encoded, plan_batches_by_cost, softmax
from stream.core.records import (
    CleanResultLike,
    Inbound,
    OutRecord,
    TextPipelineLike,
    internal_error,
    keyed_records,
    sentiment_record,
    to_out_record,
)

if TYPE_CHECKING:
    from stream.backends.base import Backend


class FatalBatchError(RuntimeError):
    """Every input of a batch failed the same step: a broken model or device, not bad input.
    Dead-lettering the whole stream would hide it, so the worker stops without committing."""


@dataclass
class Batch:
    seq: int
    items: list[Inbound]
    epoch: int = 0
    clean: dict[int, CleanResultLike] = field(default_factory=dict)  # item index -> result
    kept: list[int] = field(default_factory=list)  # item indices that go to the model
    encoded: Encoded = field(default_factory=lambda: Encoded([]))
    plan: list[tuple[list[int], list[list[int]]]] = field(default_factory=list)
    probs: np.ndarray | None = None  # rows aligned with `kept`
    assets: dict[int, list[str]] = field(default_factory=dict)  # item index -> tickers
    prep_seconds: float = 0.0
    inference_seconds: float = 0.0
    error: BaseException | None = None
    # (event, fields) the steps want logged; the shell logs and clears them.
    notes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def find_assets(batch: Batch, extractor: AssetExtractor) -> None:
    """Each tweet's assets, from its RAW text: the text pipeline strips the `$` of a cashtag,
    after which `$LINK` and "link" look alike (docs/assets.md)."""
    for i, item in enumerate(batch.items):
        if item.tweet is None:
            continue
        try:
            batch.assets[i] = extractor.extract(item.tweet.text)
        except Exception as exc:
            batch.items[i] = internal_error(item, f"asset extraction failed: {exc!r}")


def prepare(
    batch: Batch,
    pipeline: TextPipelineLike,
    backend: Backend,
    batch_size: int,
    extractor: AssetExtractor | None = None,
) -> Batch:
    """Extract assets (with `extractor`), clean, tokenize and length-plan a batch
    (`plan_batches_by_cost` with the backend's call overhead). A pipeline or tokenizer exception
    on the whole batch is retried item by item so that one poisonous text becomes one
    INTERNAL_ERROR dead letter instead of stopping the stream."""
    if extractor is not None:
        find_assets(batch, extractor)
    tweet_idx = [i for i, item in enumerate(batch.items) if item.tweet is not None]
    texts = [batch.items[i].tweet.text for i in tweet_idx]  # type: ignore[union-attr]
    try:
        results = list(pipeline.process_batch(texts)) if texts else []
        if len(results) != len(texts):
            raise RuntimeError(f"text pipeline returned {len(results)} results for {len(texts)}")
        batch.clean = dict(zip(tweet_idx, results, strict=True))
    except Exception as exc:
        batch.notes.append(("text_pipeline_batch_failed", {"error": repr(exc), "size": len(texts)}))
        failures = 0
        for i, text in zip(tweet_idx, texts, strict=True):
            try:
                batch.clean[i] = pipeline.process_batch([text])[0]
            except Exception as one:
                failures += 1
                batch.items[i] = internal_error(batch.items[i], f"text pipeline failed: {one!r}")
        if texts and failures == len(texts) and len(texts) > 1:
            raise FatalBatchError(f"the text pipeline fails on every input: {exc!r}") from exc

    kept = [i for i, res in batch.clean.items() if res.kept and res.text]
    kept_texts = [batch.clean[i].text or "" for i in kept]
    try:
        encoded = backend.encode(kept_texts)
    except Exception as exc:
        batch.notes.append(("tokenizer_batch_failed", {"error": repr(exc), "size": len(kept)}))
        ids: list[list[int]] = []
        ok: list[int] = []
        for i, text in zip(kept, kept_texts, strict=True):
            try:
                ids.append(backend.encode([text]).input_ids[0])
                ok.append(i)
            except Exception as one:
                batch.items[i] = internal_error(batch.items[i], f"tokenizer failed: {one!r}")
                batch.clean.pop(i, None)
        if kept and not ok and len(kept) > 1:
            raise FatalBatchError(f"the tokenizer fails on every input: {exc!r}") from exc
        kept, encoded = ok, Encoded(ids)
    batch.kept = kept
    batch.encoded = encoded
    groups = plan_batches_by_cost(encoded.lengths, batch_size, backend.call_overhead_tokens)
    batch.plan = [(idx, [encoded.input_ids[i] for i in idx]) for idx in groups] if kept else []
    return batch


def infer(batch: Batch, backend: Backend) -> Batch:
    """Forward passes over the planned groups; calibrated probabilities in `batch.probs`."""
    n_labels = len(backend.labels)
    logits = np.zeros((len(batch.kept), n_labels), dtype=np.float64)
    failed: set[int] = set()
    for rows, ids in batch.plan:
        try:
            logits[rows] = backend.forward_logits(ids)
        except Exception as exc:
            # CUDA OOM was already split and retried inside forward_logits; whatever is left is
            # tried one input at a time so a single bad input cannot take its neighbours along.
            batch.notes.append(("forward_failed", {"error": repr(exc), "size": len(ids)}))
            for row, one in zip(rows, ids, strict=True):
                try:
                    logits[row] = backend.forward_logits([one])[0]
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
    batch.probs = softmax(logits, backend.temperature) if len(batch.kept) else np.zeros((0, 2))
    return batch


def build_records(
    batch: Batch,
    *,
    labels: Sequence[Label],
    model_version: str,
    include_text: bool,
    output_topic: str,
    dead_letter_topic: str,
    asset_map_version: str | None = None,
    output_key: OutputKey = "tweet_id",
    now: datetime | None = None,
) -> list[OutRecord]:
    """One record per input of the batch, in input order (with `output_key="asset_fanout"`, one
    per asset of an input, the copies marked `fanout_copy`). Assets come from `prepare`;
    `asset_map_version` is the extractor's map version (None when none ran)."""
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
        try:
            if clean is None:  # defensive: prepare() gives every surviving tweet a result
                raise RuntimeError("no text pipeline result for this input")
            row = row_of.get(i)
            p = None if row is None or probs is None else probs[row].tolist()
            value = sentiment_record(
                item,
                clean,
                p,
                labels=labels,
                model_version=model_version,
                include_text=include_text,
                processed_time=processed,
                assets=batch.assets.get(i, ()),
                asset_map_version=asset_map_version,
            )
        except Exception as exc:
            bad = internal_error(item, f"cannot build the output record: {exc!r}", processed)
            assert bad.dead_letter is not None
            records.append(to_out_record(bad, bad.dead_letter, dead_letter_topic))
            continue
        record = to_out_record(item, value, output_topic, dead_letter_topic=dead_letter_topic)
        # An output that could not be serialized came back as a dead letter: never re-keyed.
        records.extend(
            keyed_records(record, value.assets, output_key)
            if record.topic == output_topic
            else [record]
        )
    return records
