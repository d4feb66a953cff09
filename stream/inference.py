"""Where the trainer, the benchmarks and older code find the model loader: the torch backend
(`stream.backends.torch_backend`) is the implementation."""

from stream.backends.torch_backend import (
    InferenceStats,
    SentimentModel,
    _is_oom,
    load_model,
    resolve_device,
    resolve_dtype,
)

__all__ = [
    "InferenceStats",
    "SentimentModel",
    "_is_oom",
    "load_model",
    "resolve_device",
    "resolve_dtype",
]
