"""Step 2: training samples/s, notebook setting (pad to 128) vs length-grouped dynamic padding."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gpu.common import MAX_LENGTH, PAD_ID
from gpu.context import Context
from gpu.models import build_model

if TYPE_CHECKING:
    import torch


# -- step 2: training ---------------------------------------------------------------------------


def step_training(ctx: Context) -> dict[str, Any]:
    from ops.settings import TrainSettings
    from stream.inference import resolve_dtype

    try:
        from trainer.throughput import measure_throughput

        source = (
            "trainer.throughput.measure_throughput (the trainer's own batch_order + train_step)"
        )
    except ImportError as exc:  # keep the step alive if the trainer moves; say so in the JSON
        measure_throughput = _local_measure_throughput
        source = f"local equivalent (trainer.throughput not importable: {exc})"
    sizes = ctx.sizes
    rng = ctx.rng(2)
    ids = ctx.inputs.take(sizes.train_pool, rng)
    labels = rng.integers(0, 2, size=len(ids)).tolist()
    cfg = TrainSettings(batch_size=sizes.train_batch, max_length=MAX_LENGTH, seed=ctx.seed)
    dtype = resolve_dtype(ctx.device, "auto")
    shape = sizes.shapes["bert-base"]
    runs: dict[str, dict[str, Any]] = {}
    for padding in ("fixed", "dynamic"):
        # A fresh model and optimizer per setting: same weights, no leftover optimizer state.
        model = build_model(shape, seed=ctx.seed).to(ctx.device)
        runs[padding] = measure_throughput(
            model,
            ids,
            labels,
            cfg,
            steps=sizes.train_steps,
            padding=padding,
            pad_id=PAD_ID,
            device=ctx.device,
            autocast_dtype=dtype,
            warmup_steps=sizes.train_warmup,
        )
        print(f"   {padding}: {runs[padding]['samples_per_s']} samples/s", flush=True)
        del model
        ctx.free()
    fixed, dynamic = runs["fixed"]["samples_per_s"], runs["dynamic"]["samples_per_s"]
    return {
        "shape": shape.describe(),
        "batch_size": sizes.train_batch,
        "autocast": str(dtype).replace("torch.", "") if dtype is not None else "fp32",
        "optimizer": "AdamW (trainer.optim.make_optimization), forward+backward+step",
        "source": source,
        "fixed_128": runs["fixed"],
        "dynamic_grouped": runs["dynamic"],
        "speedup": round(dynamic / fixed, 3) if fixed else None,
    }


def _local_measure_throughput(
    model: Any,
    ids: Sequence[Sequence[int]],
    labels: Sequence[int],
    cfg: Any,
    *,
    steps: int,
    padding: str,
    pad_id: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    warmup_steps: int = 2,
) -> dict[str, Any]:
    """Fallback with the trainer's semantics: fixed = shuffled batches padded to max_length;
    dynamic = length-sorted windows of 50 batches, padded per batch."""
    import torch

    rng = np.random.default_rng(cfg.seed)
    perm = [int(i) for i in rng.permutation(len(ids))]
    bs = cfg.batch_size
    if padding == "dynamic":
        order: list[list[int]] = []
        for start in range(0, len(perm), bs * 50):
            window = sorted(perm[start : start + bs * 50], key=lambda i: -len(ids[i]))
            order.extend(window[i : i + bs] for i in range(0, len(window), bs))
    else:
        order = [perm[i : i + bs] for i in range(0, len(perm), bs)]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    model.train()
    elapsed, samples, tokens = 0.0, 0, 0
    for i in range(warmup_steps + steps):
        idx = order[i % len(order)]
        width = cfg.max_length if padding == "fixed" else max(len(ids[j]) for j in idx)
        x = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(x)
        for row, j in enumerate(idx):
            x[row, : len(ids[j])] = torch.tensor(list(ids[j]))
            mask[row, : len(ids[j])] = 1
        y = torch.tensor([labels[j] for j in idx])
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        ctx = (
            torch.autocast(device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with ctx:
            logits = model(input_ids=x.to(device), attention_mask=mask.to(device)).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), y.to(device))
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup_steps:
            elapsed += time.perf_counter() - t0
            samples += len(idx)
            tokens += x.numel()
    return {
        "padding": padding,
        "steps": steps,
        "samples": samples,
        "seconds": round(elapsed, 3),
        "samples_per_s": round(samples / elapsed, 2) if elapsed else 0.0,
        "padded_tokens": tokens,
    }
