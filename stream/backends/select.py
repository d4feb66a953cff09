"""Which backend serves an artifact (`serve --backend torch|onnx|onnx-int8|auto`) and loading it.

`choose_backend` is pure (the caller says whether CUDA is there) so the `auto` rule is unit-tested
without a GPU; `open_backend` loads the one chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ops.errors import UserError
from ops.settings import BackendChoice, Device, Precision
from stream.artifact import ArtifactMeta
from stream.backends.base import Backend

BackendName = Literal["torch", "onnx", "onnx-int8"]
BACKEND_CHOICES: tuple[BackendChoice, ...] = ("torch", "onnx", "onnx-int8", "auto")
_VARIANT_OF = {"onnx": "fp32", "onnx-int8": "int8"}


def _gated(meta: ArtifactMeta, variant: str) -> bool:
    entry = meta.onnx.get(variant)
    return entry is not None and entry.gate_passed


def choose_backend(
    requested: BackendChoice, cuda_available: bool, artifact_meta: ArtifactMeta
) -> tuple[BackendName, str]:
    """The backend to load and why, in words for the log line.

    `auto`: CUDA torch on a GPU (ORT's CPU kernels cannot compete there); on a CPU the int8 file
    when the artifact ships one (export writes it only when it passed the quality gate and ran
    faster than fp32 ONNX), else the fp32 ONNX file, else torch.
    """
    if requested == "torch":
        return "torch", "requested --backend torch"
    if requested in _VARIANT_OF:
        variant = _VARIANT_OF[requested]
        if not _gated(artifact_meta, variant):
            raise UserError(
                f"--backend {requested}: the artifact has no gated ONNX {variant} model",
                hint="run `cryptosent export --model DIR --csv CSV` or use --backend auto",
            )
        name: BackendName = "onnx" if requested == "onnx" else "onnx-int8"
        return name, f"requested --backend {requested}"
    if requested != "auto":
        raise UserError(
            f"unknown backend {requested!r}; expected one of {', '.join(BACKEND_CHOICES)}"
        )
    if cuda_available:
        return "torch", "auto: a CUDA device is available, torch on the GPU"
    if _gated(artifact_meta, "int8"):
        entry = artifact_meta.onnx["int8"]
        return "onnx-int8", (
            f"auto: CPU, int8 ONNX passed the gate (macro-F1 delta {entry.macro_f1_delta:+.4f}, "
            f"agreement {entry.agreement:.4f})"
        )
    if _gated(artifact_meta, "fp32"):
        return "onnx", "auto: CPU, fp32 ONNX (no int8 file passed the gate)"
    return "torch", "auto: CPU, the artifact has no gated ONNX export"


def open_backend(
    name: BackendName,
    directory: Path,
    *,
    device: Device = "auto",
    precision: Precision = "auto",
    threads: int | None = None,
    max_length: int | None = None,
) -> Backend:
    """Load the chosen backend; ONNX files are checksum-verified (a one-line UserError if not)."""
    if name == "torch":
        from stream.inference import load_model

        return load_model(
            directory,
            device=device,
            precision=precision,
            max_length=max_length,
            num_threads=threads,
        )
    from stream.backends.onnx import load_onnx_backend

    return load_onnx_backend(
        directory,
        "int8" if name == "onnx-int8" else "fp32",
        threads=threads,
        max_length=max_length,
    )


__all__ = ["BACKEND_CHOICES", "BackendChoice", "BackendName", "choose_backend", "open_backend"]
