"""Numeric backends behind one seam: what serving and evaluation need from a model.

`base.Backend` is the protocol; `torch_backend.SentimentModel` (PyTorch, CPU or CUDA) and
`onnx.OnnxBackend` (ONNX Runtime on the CPU, fp32 or gated int8) implement it; `load_backend`
picks one from the `model` settings section. The text pipeline is not a backend's business: every
backend receives texts already cleaned by the artifact's pipeline, which is what keeps training
and serving equal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ops.settings import ModelSettings
    from stream.backends.base import Backend


def _cuda_available(model: ModelSettings) -> bool:
    if model.device == "cpu":
        return False
    if model.device == "cuda":
        return True
    import torch

    return bool(torch.cuda.is_available())


def on_accelerator(backend: Backend) -> bool:
    """Whether the backend's forward passes run on a GPU (the torch backend on CUDA)."""
    from stream.backends.torch_backend import SentimentModel

    return isinstance(backend, SentimentModel) and backend.device.type == "cuda"


def load_backend(model: ModelSettings, *, threads: int | None = None) -> Backend:
    """The backend `model.backend` names for `model.artifact_dir` (`auto`: torch on a GPU, else
    the artifact's gated ONNX file, else torch), logged with the reason. Loads the runtime
    lazily: importing `stream.backends` imports neither torch nor onnxruntime. `threads` is the
    CPU intra-op thread count an ONNX session is created with (torch sets its own per thread).
    The text pipeline is not part of it: build it from the artifact, `TextPipeline(meta.text)`."""
    from ops.logging import get_logger
    from stream.artifact import read_meta
    from stream.backends.select import choose_backend, open_backend

    meta = read_meta(model.artifact_dir)
    cuda = model.backend == "auto" and _cuda_available(model)
    name, reason = choose_backend(model.backend, cuda, meta)
    get_logger(__name__).info("backend_chosen", backend=name, reason=reason)
    return open_backend(
        name,
        model.artifact_dir,
        device=model.device,
        precision=model.precision,
        threads=threads,
        max_length=model.max_length,
    )
