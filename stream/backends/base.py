"""The `Backend` protocol: tokenize, run one planned batch, and say what it is.

Kept free of torch and onnxruntime so that the serving loop, the planners and the tests' fakes
depend on the shape alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from schemas.messages import Label
from stream.core.planning import Encoded


class Backend(Protocol):
    """A loaded model artifact, ready to turn cleaned texts into logits."""

    @property
    def name(self) -> str:
        """The backend and its precision, e.g. ``torch-cpu-fp32``, ``onnx-int8``."""
        ...

    @property
    def model_version(self) -> str: ...

    @property
    def labels(self) -> Sequence[Label]:
        """Class labels in logit-column order."""
        ...

    @property
    def temperature(self) -> float: ...

    @property
    def call_overhead_tokens(self) -> float:
        """A forward call's fixed cost in tokens' worth of compute (see plan_batches_by_cost)."""
        ...

    def init_thread(self, threads: int | None) -> None:
        """Called once on the thread that will call `forward_logits`, before the first call;
        `threads` is `stream.torch_threads` (intra-op CPU threads, None = the runtime's
        default). A backend that sets its threads at load time ignores it."""
        ...

    def encode(self, texts: Sequence[str]) -> Encoded:
        """Token ids, truncated at the artifact's max_length, never padded."""
        ...

    def forward_logits(self, batch_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Raw logits, shape (len(batch_ids), len(labels)), for one planned batch padded only to
        its own longest row."""
        ...
