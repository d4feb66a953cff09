"""Training throughput: samples/s over real optimizer steps, with the trainer's own `train_step`.

Used by the benchmarks (bench/train_quality.py, bench/gpu), not by training itself.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ops.settings import TrainSettings
from trainer.batching import batch_order, collate
from trainer.loop import Padding, train_step
from trainer.optim import make_optimization

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

__all__ = ["Padding", "measure_throughput"]


def measure_throughput(
    model: PreTrainedModel,
    ids: Sequence[Sequence[int]],
    labels: Sequence[int],
    cfg: TrainSettings,
    *,
    steps: int,
    padding: Padding,
    pad_id: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    warmup_steps: int = 2,
) -> dict[str, Any]:
    """Training samples/s over `steps` real optimizer steps (after `warmup_steps` untimed ones),
    with the same `train_step` the trainer uses. `fixed` pads every batch to `cfg.max_length`
    without length grouping (the notebook's setting); `dynamic` pads per batch after length
    grouping."""
    import torch

    grouped = padding == "dynamic"
    order = batch_order(
        [len(x) for x in ids], cfg.batch_size, seed=cfg.seed, group_by_length=grouped
    )
    need = warmup_steps + steps
    while len(order) < need:
        order = order + order
    labels_t = torch.tensor(list(labels), dtype=torch.long)
    opt = make_optimization(
        model,
        cfg,
        total_steps=need,
        train_labels=labels,
        device=device,
        autocast_dtype=autocast_dtype,
    )
    pad_to = None if grouped else cfg.max_length
    samples = 0
    tokens = 0
    real = 0
    elapsed = 0.0
    for i, idx in enumerate(order[:need]):
        batch = collate([ids[j] for j in idx], pad_id, pad_to=pad_to)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_step(
            model,
            batch=batch,
            labels=labels_t[idx],
            opt=opt,
            device=device,
            autocast_dtype=autocast_dtype,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup_steps:
            elapsed += time.perf_counter() - t0
            samples += len(idx)
            tokens += int(batch["input_ids"].numel())
            real += int(batch["attention_mask"].sum())
    return {
        "padding": padding,
        "group_by_length": grouped,
        "steps": steps,
        "batch_size": cfg.batch_size,
        "samples": samples,
        "seconds": round(elapsed, 3),
        "samples_per_s": round(samples / elapsed, 2) if elapsed > 0 else 0.0,
        "padded_tokens": tokens,
        "real_tokens": real,
        "padding_share": round(1 - real / tokens, 4) if tokens else 0.0,
    }
