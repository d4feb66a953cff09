"""The optimizer, its learning-rate schedule and the loss weights of a fine-tuning run.

Learning rates per parameter group: with `layer_lr_decay` < 1 each encoder layer below the top
one learns `decay` times slower than the layer above it, the embeddings slowest (layer-wise
decay, as in ELECTRA and ULMFiT's discriminative rates); `head_lr_scale` lets the newly
initialised classifier (and the pooler it reads) learn faster than the pre-trained body. Both
default to 1.0, which is one rate for everything.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ops.settings import TrainSettings
from trainer.batching import class_weights

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

_LAYER = re.compile(r"\.layers?\.(\d+)\.")


@dataclass
class Optimization:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: Any  # torch.amp.GradScaler when training in fp16, else None
    loss_weight: torch.Tensor | None
    max_grad_norm: float
    label_smoothing: float = 0.0
    base_lr: float = 0.0  # the top encoder layer's rate before the schedule

    def current_lr(self) -> float:
        """`base_lr` through the schedule: what the top encoder layer learns at now (every
        group follows the same warmup and decay)."""
        group = self.optimizer.param_groups[0]
        return float(self.base_lr * group["lr"] / group.get("initial_lr", group["lr"]))


def default_learning_rate(hidden_size: int) -> float:
    """The notebook's 1e-4 suits small encoders such as MiniLM (hidden 384), which learn too
    slowly at BERT's usual rates; for bert-base-sized models (hidden 768+) it is high, so they get
    3e-5, inside the BERT paper's 2e-5..5e-5 range."""
    return 1e-4 if hidden_size <= 512 else 3e-5


def parameter_depth(name: str, n_layers: int) -> int | None:
    """0 for embeddings, 1..n_layers for encoder layer 0..n_layers-1, None for the head (the
    pooler, the classifier and anything else above the encoder)."""
    if ".embeddings." in f".{name}":
        return 0
    found = _LAYER.search(name)
    if found is not None and int(found.group(1)) < n_layers:
        return int(found.group(1)) + 1
    return None


def learning_rate_of(
    name: str, n_layers: int, *, lr: float, layer_decay: float, head_scale: float
) -> float:
    depth = parameter_depth(name, n_layers)
    if depth is None:
        return lr * head_scale
    return lr * layer_decay ** (n_layers - depth)


def parameter_groups(
    model: torch.nn.Module, cfg: TrainSettings, lr: float, n_layers: int
) -> list[dict[str, Any]]:
    """AdamW groups: one per (learning rate, decayed or not); biases and LayerNorm weights (every
    parameter under 2 dimensions) get no weight decay."""
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        rate = learning_rate_of(
            name,
            n_layers,
            lr=lr,
            layer_decay=cfg.layer_lr_decay,
            head_scale=cfg.head_lr_scale,
        )
        groups.setdefault((rate, param.ndim >= 2), []).append(param)
    return [
        {"params": params, "lr": rate, "weight_decay": cfg.weight_decay if decayed else 0.0}
        for (rate, decayed), params in sorted(groups.items(), key=lambda kv: (-kv[0][1], kv[0][0]))
    ]


def make_optimization(
    model: PreTrainedModel,
    cfg: TrainSettings,
    *,
    total_steps: int,
    train_labels: Sequence[int],
    device: torch.device,
    autocast_dtype: torch.dtype | None,
) -> Optimization:
    """Moves the model to `device`, then builds AdamW over `parameter_groups`, linear warmup
    then linear decay to 0 (applied to every group's own rate), the grad scaler and the loss
    weights."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    module: torch.nn.Module = model
    module.to(device)
    config = getattr(model, "config", None)
    hidden = int(getattr(config, "hidden_size", 0))
    lr = cfg.learning_rate or default_learning_rate(hidden)
    n_layers = int(getattr(config, "num_hidden_layers", 0))
    optimizer = torch.optim.AdamW(parameter_groups(module, cfg, lr, n_layers), lr=lr)
    # transformers leaves this function unannotated; it returns a LambdaLR.
    scheduler = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer,
        num_warmup_steps=math.ceil(cfg.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    scaler = (
        torch.amp.GradScaler("cuda")
        if device.type == "cuda" and autocast_dtype == torch.float16
        else None
    )
    weight = (
        torch.tensor(class_weights(train_labels), dtype=torch.float32, device=device)
        if cfg.class_weighted_loss
        else None
    )
    return Optimization(
        optimizer, scheduler, scaler, weight, cfg.max_grad_norm, cfg.label_smoothing, lr
    )


__all__ = [
    "Optimization",
    "default_learning_rate",
    "learning_rate_of",
    "make_optimization",
    "parameter_depth",
    "parameter_groups",
]
