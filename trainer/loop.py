"""The fine-tuning loop, in plain PyTorch.

A hand-written loop instead of the Hugging Face Trainer: every choice (class-weighted loss,
length-grouped batches, what "best" means, when to stop) is visible here in a page, and there is
no `accelerate` dependency. Half precision is CUDA-only (bf16 autocast, or fp16 with a
GradScaler where bf16 is unsupported); the CPU trains in fp32.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ops.settings import TrainSettings
from stream.backends.torch_backend import forward_context
from stream.core.planning import plan_batches
from trainer.averaging import WeightAverage
from trainer.batching import batch_order, collate, source_weights
from trainer.optim import Optimization, make_optimization

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

Padding = Literal["dynamic", "fixed"]
# What an eval record also carries for the live weights when the averaged ones are evaluated.
LIVE_KEYS = ("val_loss", "val_macro_f1", "val_mean_source_macro_f1")
LogFn = Callable[[dict[str, Any]], None]


def train_step(
    model: PreTrainedModel,
    *,
    batch: dict[str, torch.Tensor],
    labels: torch.Tensor,
    opt: Optimization,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    sample_weight: torch.Tensor | None = None,
) -> float:
    """One optimizer step; returns the (weighted) loss. Shared by training and the benchmark.

    `sample_weight` (source balancing) multiplies each row's loss on top of its class weight; the
    batch loss is then the weighted mean, as cross_entropy's own `weight` gives."""
    import torch
    from torch.nn import functional as nnf

    module: torch.nn.Module = model
    module.train()
    moved = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    labels = labels.to(device, non_blocking=True)
    with forward_context(device, autocast_dtype):
        logits = model(**moved).logits
    # The loss in fp32 whatever the autocast dtype; the weights are the point of this line (the
    # notebook computed class weights and never passed them to the loss).
    smoothing = opt.label_smoothing
    if sample_weight is None:
        loss = nnf.cross_entropy(
            logits.float(), labels, weight=opt.loss_weight, label_smoothing=smoothing
        )
    else:
        per_row = nnf.cross_entropy(
            logits.float(), labels, reduction="none", label_smoothing=smoothing
        )
        w = sample_weight.to(device, non_blocking=True)
        if opt.loss_weight is not None:
            w = w * opt.loss_weight[labels]
        loss = (per_row * w).sum() / w.sum()
    opt.optimizer.zero_grad(set_to_none=True)
    if opt.scaler is not None:
        opt.scaler.scale(loss).backward()
        opt.scaler.unscale_(opt.optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), opt.max_grad_norm)
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
    else:
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(model.parameters(), opt.max_grad_norm)
        opt.optimizer.step()
    opt.scheduler.step()
    return float(loss.detach())


def validate(
    model: PreTrainedModel,
    ids: Sequence[Sequence[int]],
    labels: Sequence[int],
    *,
    pad_id: int,
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    groups: Sequence[int] | None = None,
) -> dict[str, float]:
    """Validation loss (unweighted), accuracy and F1s of the in-memory model; with `groups` (the
    source of each row) also each source's macro-F1 and their mean."""
    import torch
    from sklearn.metrics import accuracy_score, f1_score
    from torch.nn import functional as nnf

    module: torch.nn.Module = model
    module.eval()
    y = np.asarray(labels, dtype=np.int64)
    logits = np.zeros((len(ids), 2), dtype=np.float32)
    with torch.inference_mode():
        for idx in plan_batches([len(x) for x in ids], batch_size):
            batch = collate([ids[i] for i in idx], pad_id)
            moved = {k: v.to(device) for k, v in batch.items()}
            with forward_context(device, autocast_dtype):
                out = model(**moved).logits
            logits[idx] = out.float().cpu().numpy()
    loss = float(nnf.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y)))
    pred = logits.argmax(axis=1)
    out = {
        "val_loss": round(loss, 6),
        "val_accuracy": round(float(accuracy_score(y, pred)), 6),
        "val_macro_f1": round(float(f1_score(y, pred, average="macro", zero_division=0)), 6),
        "val_weighted_f1": round(float(f1_score(y, pred, average="weighted", zero_division=0)), 6),
    }
    if groups is not None and len(set(groups)) > 1:
        g = np.asarray(groups)
        per_source = [
            float(f1_score(y[g == k], pred[g == k], average="macro", zero_division=0))
            for k in sorted(set(groups))
        ]
        out.update({f"val_macro_f1_source{k}": round(v, 6) for k, v in enumerate(per_source)})
        out["val_mean_source_macro_f1"] = round(float(np.mean(per_source)), 6)
    return out


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best: dict[str, Any]
    evals: list[dict[str, Any]]
    steps: int
    epochs_completed: float
    stopped_early: bool
    train_seconds: float
    samples_per_s: float


def eval_points(steps_per_epoch: int, evals_per_epoch: int) -> set[int]:
    """1-based step-in-epoch indices after which validation runs, spread evenly."""
    n = min(evals_per_epoch, steps_per_epoch)
    return {max(1, round(steps_per_epoch * k / n)) for k in range(1, n + 1)}


def fit(
    model: PreTrainedModel,
    cfg: TrainSettings,
    *,
    train_ids: Sequence[Sequence[int]],
    train_labels: Sequence[int],
    val_ids: Sequence[Sequence[int]],
    val_labels: Sequence[int],
    pad_id: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    log: LogFn,
    progress: bool = True,
    train_groups: Sequence[int] | None = None,
    val_groups: Sequence[int] | None = None,
) -> FitResult:
    """Train, validate `evals_per_epoch` times an epoch, keep the best state by validation
    macro-F1 (validation loss breaks ties), stop after `early_stopping_patience` evaluations
    without improvement (0 disables early stopping).

    With several sources (`*_groups`: the source of each row) "best" is the mean of the
    per-source validation macro-F1s, so a model that does well on the large source only does
    not win; `cfg.source_balance == "weight"` weights each row's loss by n / (k * n_source).
    With `cfg.ema_decay` > 0 the candidates evaluated, selected and returned are the moving
    average of the weights (trainer/averaging.py), the live weights' figures logged beside them."""
    import torch
    from tqdm.auto import tqdm

    n = len(train_ids)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    points = eval_points(steps_per_epoch, cfg.evals_per_epoch)
    lengths = [len(x) for x in train_ids]
    labels_t = torch.tensor(list(train_labels), dtype=torch.long)
    row_weight = (
        torch.tensor(source_weights(train_groups), dtype=torch.float32)
        if cfg.source_balance == "weight"
        and train_groups is not None
        and len(set(train_groups)) > 1
        else None
    )
    select = (
        "val_mean_source_macro_f1"
        if val_groups is not None and len(set(val_groups)) > 1
        else "val_macro_f1"
    )
    opt = make_optimization(
        model,
        cfg,
        total_steps=total_steps,
        train_labels=train_labels,
        device=device,
        autocast_dtype=autocast_dtype,
    )

    average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None

    best_key: tuple[float, float] | None = None
    best: dict[str, Any] = {}
    best_state: dict[str, torch.Tensor] = {}
    evals: list[dict[str, Any]] = []
    since_best = 0
    step = 0
    stopped = False
    samples_seen = 0
    busy = 0.0  # seconds spent in train steps, excluding validation
    start = time.perf_counter()

    def measure() -> dict[str, float]:
        return validate(
            model,
            val_ids,
            val_labels,
            pad_id=pad_id,
            batch_size=cfg.eval_batch_size,
            device=device,
            autocast_dtype=autocast_dtype,
            groups=val_groups,
        )

    def run_eval() -> bool:
        nonlocal best_key, best, best_state, since_best
        live = measure()
        # The averaged weights are the candidates (swapped in once, for scoring and for the
        # snapshot); the live ones are logged beside them so a run shows what averaging bought.
        with contextlib.nullcontext() if average is None else average.applied():
            metrics = live
            if average is not None:
                metrics = measure()
                metrics.update({f"live_{k}": v for k, v in live.items() if k in LIVE_KEYS})
            key = (metrics[select], -metrics["val_loss"])
            improved = best_key is None or key > best_key
            if improved:
                # A CPU copy: the live weights keep changing, and the best must survive them.
                best_state = {
                    k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                }
        record = {
            "type": "eval",
            "step": step,
            "epoch": round(step / steps_per_epoch, 4),
            **metrics,
            "best": improved,
        }
        evals.append(record)
        log(record)
        if improved:
            best_key = key
            best = dict(record)
            since_best = 0
        else:
            since_best += 1
        patience = cfg.early_stopping_patience
        return patience > 0 and since_best >= patience

    epoch_bar = tqdm(
        total=n_epochs, desc="epochs", unit="epoch", disable=not progress, file=sys.stderr
    )
    try:
        for epoch in range(n_epochs):
            order = batch_order(
                lengths, cfg.batch_size, seed=cfg.seed + epoch, group_by_length=cfg.group_by_length
            )
            remaining = total_steps - step
            order = order[:remaining]
            step_bar = tqdm(
                total=len(order),
                desc=f"epoch {epoch + 1}/{n_epochs}",
                unit="step",
                leave=False,
                disable=not progress,
                file=sys.stderr,
            )
            running = 0.0
            for in_epoch, idx in enumerate(order, start=1):
                t0 = time.perf_counter()
                batch = collate([train_ids[i] for i in idx], pad_id)
                loss = train_step(
                    model,
                    batch=batch,
                    labels=labels_t[idx],
                    opt=opt,
                    device=device,
                    autocast_dtype=autocast_dtype,
                    sample_weight=None if row_weight is None else row_weight[idx],
                )
                if average is not None:
                    average.update()
                dt = time.perf_counter() - t0
                busy += dt
                samples_seen += len(idx)
                step += 1
                running = loss if in_epoch == 1 else 0.9 * running + 0.1 * loss
                rate = len(idx) / dt if dt > 0 else 0.0
                log(
                    {
                        "type": "step",
                        "step": step,
                        "epoch": round(step / steps_per_epoch, 4),
                        "loss": round(loss, 6),
                        "lr": opt.current_lr(),
                        "samples_per_s": round(rate, 2),
                        "elapsed_s": round(time.perf_counter() - start, 3),
                    }
                )
                step_bar.update(1)
                step_bar.set_postfix(
                    loss=f"{running:.4f}", samples_s=f"{samples_seen / max(busy, 1e-9):.1f}"
                )
                last = step == total_steps
                if (in_epoch in points or last) and run_eval():
                    stopped = True
                    break
            step_bar.close()
            epoch_bar.update(1)
            if evals:
                epoch_bar.set_postfix(
                    val=f"{evals[-1][select]:.4f}", best=f"{best.get(select, 0.0):.4f}"
                )
            if stopped or step >= total_steps:
                break
    finally:
        epoch_bar.close()
    return FitResult(
        best_state=best_state,
        best=best,
        evals=evals,
        steps=step,
        epochs_completed=round(step / steps_per_epoch, 4),
        stopped_early=stopped,
        train_seconds=round(time.perf_counter() - start, 3),
        samples_per_s=round(samples_seen / busy, 2) if busy > 0 else 0.0,
    )
