"""An exponential moving average of the weights, evaluated and saved in place of the live ones.

Averaging the weights a run passes through (Polyak averaging; the EMA of many vision and
diffusion recipes) smooths the last steps' noise, which small validation sets cannot tell
from signal. `decay` d keeps `d * shadow + (1 - d) * live` after every optimizer step; early on
the effective decay is `min(d, (1 + n) / (10 + n))` after n updates, so the average does not
cling to the random head it started from.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._shadow = [p.detach().clone() for p in self._params]

    def effective_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    def update(self) -> None:
        """Fold the live weights in; call after each optimizer step."""
        import torch

        weight = 1.0 - self.effective_decay()
        self.updates += 1
        with torch.no_grad():
            torch._foreach_lerp_(self._shadow, [p.detach() for p in self._params], weight)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model for the block, the live ones back after it."""
        import torch

        with torch.no_grad():
            live = [p.detach().clone() for p in self._params]
            for p, s in zip(self._params, self._shadow, strict=True):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, v in zip(self._params, live, strict=True):
                    p.copy_(v)


__all__ = ["WeightAverage"]
