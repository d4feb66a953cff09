"""Building ONNX files from an artifact: export, ORT's transformer fusion, int8 quantization.

Each function writes one file; trainer/export.py decides which ones ship, after the gate.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from stream.backends.onnx import INPUT_NAMES, OUTPUT_NAME

OPSET = 17


def export_graph(artifact: Path, out: Path, *, opset: int = OPSET) -> None:
    """torch -> ONNX with dynamic batch and sequence axes; eager attention, whose MatMul/Softmax
    pattern is what ORT's BERT fusion recognises."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        str(artifact),
        local_files_only=True,
        trust_remote_code=False,
        use_safetensors=True,
        attn_implementation="eager",
    )
    model.eval()

    class _Logits(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = self.inner(
                input_ids=input_ids, attention_mask=attention_mask
            ).logits
            return logits

    sample = (torch.ones((2, 8), dtype=torch.long), torch.ones((2, 8), dtype=torch.long))
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    with torch.inference_mode():
        torch.onnx.export(
            _Logits(model),
            sample,
            str(out),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={**axes, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )


def optimize_graph(src: Path, dst: Path, artifact: Path) -> None:
    """ORT's transformer optimizer: attention, LayerNorm, GELU and embedding fusion."""
    import json

    from onnxruntime.transformers.optimizer import optimize_model

    config = json.loads((artifact / "config.json").read_text(encoding="utf-8"))
    model = optimize_model(
        str(src),
        model_type="bert",
        num_heads=int(config.get("num_attention_heads", 0)),
        hidden_size=int(config.get("hidden_size", 0)),
        opt_level=1,
        use_gpu=False,
    )
    model.save_model_to_file(str(dst))


def sensitive_nodes(path: Path, *, edge_layers: bool = True) -> list[str]:
    """Nodes kept fp32 in the `-keep` candidates: the pooler and classifier (a two-logit margin
    is where int8 error turns into a flipped argmax) and the first and last encoder layers."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    names = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm", "Attention")]
    layers = sorted({int(part) for n in names for part in _layer_numbers(n)}, key=lambda x: x)
    edge = {layers[0], layers[-1]} if layers and edge_layers else set()
    keep = []
    for name in names:
        lowered = name.lower()
        head = "pooler" in lowered or "classifier" in lowered
        if head or any(int(p) in edge for p in _layer_numbers(name)):
            keep.append(name)
    return keep


def _layer_numbers(name: str) -> list[str]:
    parts = name.replace("/", ".").split(".")
    return [
        parts[i + 1] for i, p in enumerate(parts[:-1]) if p == "layer" and parts[i + 1].isdigit()
    ]


def quantize_dynamic_file(
    src: Path, dst: Path, *, per_channel: bool, exclude: Sequence[str] = ()
) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        nodes_to_exclude=list(exclude),
        extra_options={"MatMulConstBOnly": True},
    )


def quantize_static_file(
    src: Path, dst: Path, calibration: Sequence[dict[str, np.ndarray]], exclude: Sequence[str] = ()
) -> None:
    """QDQ int8 (activations uint8 asymmetric, weights int8 per-channel), ranges calibrated on
    training texts only, never on the test split the gate scores."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._items: Iterator[dict[str, np.ndarray]] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._items, None)

    quantize_static(
        str(src),
        str(dst),
        _Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
        nodes_to_exclude=list(exclude),
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"MatMulConstBOnly": True},
    )
