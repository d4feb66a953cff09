"""Step 5: peak GPU memory at the largest batch; forced OOM -> split-and-retry is exact."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from gpu.common import (
    CLS_ID,
    FIRST_WORD_ID,
    MAX_LENGTH,
    SEP_ID,
    TOLERANCE_PROB,
    micro_default,
    serve_batches,
)
from gpu.context import Context, round_to
from gpu.models import build_model, serving_model

if TYPE_CHECKING:
    from stream.inference import SentimentModel


# -- step 5: memory and forced OOM --------------------------------------------------------------


def _forced_oom(limit: int, run: Callable[[dict[str, Any]], Any], seen: list[int]) -> Any:
    import torch

    oom_type: type[Exception] = getattr(torch, "OutOfMemoryError", RuntimeError)

    def run_batch(batch: dict[str, Any]) -> Any:
        rows = int(batch["input_ids"].shape[0])
        if rows > limit:
            raise oom_type(
                f"CUDA out of memory (forced by the benchmark for {rows} > {limit} rows)"
            )
        seen.append(rows)
        return run(batch)

    return run_batch


def oom_check(sm: SentimentModel, ids: list[list[int]], limit: int) -> dict[str, Any]:
    """`forward_logits` on one batch, then again with `run_batch` failing with OOM above `limit`
    rows: the batch must be halved until it fits, lose no row and give the same numbers."""
    from stream.core.planning import softmax
    from stream.inference import InferenceStats

    plain = sm.forward_logits(ids)
    seen: list[int] = []
    # The wrapper runs the unforced model's `_forward` (whose run_batch is None): the forced
    # copy's own `_forward` would call the wrapper again.
    forced_sm = dataclasses.replace(
        sm, stats=InferenceStats(), run_batch=_forced_oom(limit, sm._forward, seen)
    )
    forced = forced_sm.forward_logits(ids)
    p_plain, p_forced = softmax(plain), softmax(forced)
    diff = float(np.abs(p_plain - p_forced).max()) if len(forced) == len(plain) else float("inf")
    tolerance = 1e-5 if sm.autocast_dtype is None else TOLERANCE_PROB
    return {
        "rows_in": len(ids),
        "rows_out": len(forced),
        "limit": limit,
        "oom_splits": forced_sm.stats.oom_splits,
        "forward_calls": forced_sm.stats.forward_calls,
        "largest_sub_batch": max(seen) if seen else 0,
        "max_abs_prob_diff": diff,
        "bitwise_identical": bool(len(forced) == len(plain) and np.array_equal(plain, forced)),
        "labels_identical": bool(
            len(forced) == len(plain) and (plain.argmax(1) == forced.argmax(1)).all()
        ),
        "tolerance": tolerance,
        "ok": bool(
            len(forced) == len(plain)
            and forced_sm.stats.oom_splits > 0
            and (max(seen) if seen else limit + 1) <= limit
            and diff <= tolerance
        ),
    }


def step_memory(ctx: Context) -> dict[str, Any]:
    import torch

    sizes = ctx.sizes
    shape = sizes.shapes["bert-base"]
    model = build_model(shape, seed=ctx.seed).to(ctx.device)
    dtype = ctx.bf16() if ctx.cuda else None
    sm = serving_model(model, ctx.device, dtype)
    largest = max(sizes.batch_sizes)
    rng = ctx.rng(5)
    typical = max(serve_batches(ctx.inputs.take(micro_default(largest), rng), largest), key=len)
    worst = [[CLS_ID, *([FIRST_WORD_ID] * (MAX_LENGTH - 2)), SEP_ID]] * largest
    memory: list[dict[str, Any]] = []
    for label, batch in (
        (f"planned batch of {len(typical)} (width {max(len(x) for x in typical)})", typical),
        (f"worst case {largest} x {MAX_LENGTH} tokens", worst),
    ):
        entry: dict[str, Any] = {"batch": label, "rows": len(batch)}
        if ctx.cuda:
            ctx.sync()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            sm.forward_logits(batch)
            ctx.sync()
            peak = torch.cuda.max_memory_allocated()
            entry.update(
                weights_mib=round_to(before / 2**20),
                peak_allocated_mib=round_to(peak / 2**20),
                activations_mib=round_to((peak - before) / 2**20),
            )
        else:
            sm.forward_logits(batch)
            entry["peak_allocated_mib"] = None
        memory.append(entry)
    oom = oom_check(sm, ctx.inputs.take(sizes.oom_batch, rng), sizes.oom_limit)
    print(
        f"   forced OOM: {oom['rows_in']} rows -> {oom['rows_out']}, {oom['oom_splits']} splits, "
        f"max |dp| {oom['max_abs_prob_diff']:.1e}, ok={oom['ok']}",
        flush=True,
    )
    result: dict[str, Any] = {
        "shape": shape.describe(),
        "precision": "bf16" if dtype is not None else "fp32",
        "batch_size": largest,
        "memory": memory,
        "forced_oom": oom,
    }
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        result["device_total_mib"] = round_to(props.total_memory / 2**20)
    else:
        result["note"] = "cpu dry run: torch.cuda.max_memory_allocated is n/a"
    del model, sm
    return result
