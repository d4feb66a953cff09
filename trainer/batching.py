"""Batches for training: class weights, length-grouped batch order, padding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["MEGABATCH_FACTOR", "batch_order", "class_weights", "collate", "source_weights"]

# Length grouping sorts within windows of this many batches: wide enough that neighbours in a
# batch have similar lengths, narrow enough that batch composition still varies across epochs.
MEGABATCH_FACTOR = 50


def class_weights(labels: Sequence[int]) -> np.ndarray:
    """sklearn's 'balanced' weights, n / (2 * count): the minority class counts as much in the
    loss as the majority one."""
    from sklearn.utils.class_weight import compute_class_weight

    y = np.asarray(labels, dtype=np.int64)
    out: np.ndarray = compute_class_weight("balanced", classes=np.array([0, 1]), y=y)
    return out


def batch_order(
    lengths: Sequence[int], batch_size: int, *, seed: int, group_by_length: bool
) -> list[list[int]]:
    """One epoch of batches. Grouped: shuffle, cut into megabatches of 50 batches, sort each by
    length (longest first), cut into batches, then shuffle the batch order. So most batches pad
    little, while the order the model sees still changes with the seed/epoch."""
    rng = np.random.default_rng(seed)
    perm = [int(i) for i in rng.permutation(len(lengths))]
    if not group_by_length:
        return [perm[i : i + batch_size] for i in range(0, len(perm), batch_size)]
    mega = batch_size * MEGABATCH_FACTOR
    batches: list[list[int]] = []
    for start in range(0, len(perm), mega):
        window = sorted(perm[start : start + mega], key=lambda i: -lengths[i])
        batches.extend(window[i : i + batch_size] for i in range(0, len(window), batch_size))
    order = rng.permutation(len(batches))
    return [batches[int(i)] for i in order]


def collate(
    ids: Sequence[Sequence[int]], pad_id: int, *, pad_to: int | None = None
) -> dict[str, torch.Tensor]:
    """Pad to the batch's longest sequence (dynamic) or to `pad_to` (the notebook's fixed 128)."""
    import torch

    width = pad_to if pad_to is not None else max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[row, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": attention}


def source_weights(groups: Sequence[int]) -> np.ndarray:
    """Per-row weights n / (k * n_source): each of the k sources weighs the same in the loss,
    whatever its size (sklearn's 'balanced' formula, over sources instead of classes)."""
    g = np.asarray(groups, dtype=np.int64)
    present, counts = np.unique(g, return_counts=True)
    per_source = dict(
        zip(present.tolist(), (len(g) / (len(present) * counts)).tolist(), strict=True)
    )
    return np.array([per_source[int(k)] for k in g], dtype=np.float64)
