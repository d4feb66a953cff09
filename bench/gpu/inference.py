"""Step 3: tweets/s of `SentimentModel.forward_logits` on serve-planned batches: the ceiling."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from gpu.common import micro_default, serve_batches
from gpu.context import Context
from gpu.models import build_model, serving_model

if TYPE_CHECKING:
    from stream.inference import SentimentModel


# -- step 3: inference ceiling ------------------------------------------------------------------


def measure_point(
    sm: SentimentModel,
    batches: list[list[list[int]]],
    cap_s: float,
    rng: np.random.Generator,
    sync: Callable[[], None],
) -> dict[str, Any]:
    """tweets/s over the planned batches in a shuffled order (so a time-capped run still sees a
    representative mix of lengths), after warming up on the widest batch and two others."""
    order = [int(i) for i in rng.permutation(len(batches))]
    widest = max(range(len(batches)), key=lambda i: max(len(x) for x in batches[i]))
    for i in [widest, *order[:2]]:
        sm.forward_logits(batches[i])
    sync()
    done = tokens = real = n_batches = 0
    start = time.perf_counter()
    for i in order:
        batch = batches[i]
        sm.forward_logits(batch)  # returns CPU numpy: the device is synchronised per batch
        done += len(batch)
        n_batches += 1
        tokens += len(batch) * max(len(x) for x in batch)
        real += sum(len(x) for x in batch)
        if time.perf_counter() - start > cap_s:
            break
    seconds = time.perf_counter() - start
    return {
        "tweets": done,
        "batches": n_batches,
        "seconds": round(seconds, 3),
        "tweets_per_s": round(done / seconds, 1) if seconds > 0 else 0.0,
        "padding_share": round(1 - real / tokens, 4) if tokens else 0.0,
    }


def step_inference(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes
    rng = ctx.rng(3)
    pool = ctx.inputs.take(sizes.infer_pool, rng)
    points: list[dict[str, Any]] = []
    # Serve's default micro-batch (MICRO_BATCH_FACTOR x bs) sorts only that many forward
    # batches' worth of tweets, so its widest batch pads to the rare ~128-token tweet. The extra
    # sweep keeps micro-batches at `wide` messages and cuts them into smaller forward batches
    # (a larger stream.batch_max_messages): does less padding pay for the extra launches?
    wide = micro_default(max(sizes.batch_sizes))
    plans: list[tuple[str, str, int | None, tuple[int, ...]]] = [
        (name, prec, None, sizes.batch_sizes)
        for name in ("bert-base", "minilm")
        for prec in ("bf16", "fp32")
    ]
    plans.insert(
        1,
        ("bert-base", "bf16", wide, tuple(b for b in sizes.batch_sizes if micro_default(b) < wide)),
    )
    models: dict[str, Any] = {}
    for shape_name, precision, micro, batch_sizes in plans:
        if shape_name not in models:
            models.clear()
            ctx.free()
            models[shape_name] = build_model(sizes.shapes[shape_name], seed=ctx.seed).to(ctx.device)
        dtype = ctx.bf16() if precision == "bf16" else None
        sm = serving_model(models[shape_name], ctx.device, dtype)
        for bs in batch_sizes:
            batches = serve_batches(pool, bs, micro)
            point = measure_point(sm, batches, sizes.point_cap_s, ctx.rng(30 + bs), ctx.sync)
            point.update(
                shape=shape_name,
                precision=precision,
                batch_size=bs,
                micro_batch=micro or micro_default(bs),
            )
            points.append(point)
            if micro is None:
                ctx.ceiling[(shape_name, precision, bs)] = point["tweets_per_s"]
            print(
                f"   {shape_name:9s} {precision} bs {bs:4d} micro {micro or micro_default(bs):5d}: "
                f"{point['tweets_per_s']:>10.1f} tweets/s ({point['tweets']} tweets, "
                f"padding {point['padding_share']:.1%})",
                flush=True,
            )
    models.clear()
    ctx.free()
    ab = attention_ab(ctx, pool, max(sizes.batch_sizes[:4]))
    best = max(
        (
            p
            for p in points
            if p["shape"] == "bert-base" and p["micro_batch"] == micro_default(p["batch_size"])
        ),
        key=lambda p: p["tweets_per_s"],
    )
    return {
        "method": "SentimentModel.forward_logits over plan_batches-grouped micro-batches of "
        "4 x batch size (serve's grouping), pre-tokenized, shuffled batch order, time-capped; "
        f"plus bert-base bf16 with micro-batches of {wide} cut into smaller forward batches",
        "pool": len(pool),
        "cap_s_per_point": sizes.point_cap_s,
        "shapes": {k: v.describe() for k, v in sizes.shapes.items()},
        "points": points,
        "best_bert_base": {k: best[k] for k in ("precision", "batch_size", "tweets_per_s")},
        "attention_ab": ab,
    }


def attention_ab(ctx: Context, pool: list[list[int]], bs: int) -> dict[str, Any]:
    """bert-base bf16 at batch `bs`, the same planned batches twice: `forward_logits` as serve and
    the trainer run it (cuDNN attention left out, stream.backends.torch_backend.forward_context)
    and the plain forward under torch's own SDPA choice, which on Hopper prefers cuDNN attention
    and builds a graph for every new (rows, width) shape."""
    if not ctx.cuda:
        return {"status": "skipped", "reason": "cuDNN attention is CUDA-only"}
    import dataclasses

    import torch

    model = build_model(ctx.sizes.shapes["bert-base"], seed=ctx.seed).to(ctx.device)
    dtype = ctx.bf16()
    sm = serving_model(model, ctx.device, dtype)

    def torch_default(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        moved = {k: v.to(ctx.device, non_blocking=True) for k, v in batch.items()}
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype):
            logits: torch.Tensor = model(**moved).logits
        return logits.float().cpu()

    batches = serve_batches(pool, bs)
    out: dict[str, Any] = {"batch_size": bs, "precision": "bf16"}
    for name, candidate in (
        ("torch_default_sdpa", dataclasses.replace(sm, run_batch=torch_default)),
        ("cudnn_left_out", sm),
    ):
        out[name] = measure_point(candidate, batches, ctx.sizes.point_cap_s, ctx.rng(77), ctx.sync)
        print(f"   attention A/B, {name}: {out[name]['tweets_per_s']} tweets/s", flush=True)
    slow = out["torch_default_sdpa"]["tweets_per_s"]
    out["speedup"] = round(out["cudnn_left_out"]["tweets_per_s"] / slow, 2) if slow else None
    return out
