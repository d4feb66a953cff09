"""Numeric backends behind one seam: what serving and evaluation need from a model.

`base.Backend` is the protocol; `torch_backend.SentimentModel` is the first implementation and
ONNX Runtime the next; `load_backend` picks one from the `model` settings section. The text
pipeline is not a backend's business: every backend receives texts already cleaned by the
artifact's pipeline, which is what keeps training and serving equal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ops.settings import ModelSettings
    from stream.backends.base import Backend


def load_backend(model: ModelSettings) -> Backend:
    """The backend for `model.artifact_dir` on `model.device`, by the `model` settings section.
    Loads the runtime lazily: importing `stream.backends` imports neither torch nor onnxruntime.
    (The place a `--backend torch|onnx` choice goes.) The text pipeline is not part of it: build
    it from the artifact, `TextPipeline(read_meta(dir).text)`."""
    from stream.backends.torch_backend import load_model

    return load_model(
        model.artifact_dir,
        device=model.device,
        precision=model.precision,
        max_length=model.max_length,
    )
