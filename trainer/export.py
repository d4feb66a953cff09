"""ONNX export with a quality gate: `model.onnx` and, when it passes, `model.int8.onnx`.

fp32 torch is the reference. Every candidate file is scored on the held-out test split (macro-F1
against the labels, argmax agreement against torch) and timed on the same texts with serve's
planner; a file ships only when it passes the gate, and int8 only when it is also faster than the
fp32 file. The shipped files and the gate's quality figures go into `cryptosent.json` (`onnx`,
`metrics.onnx_gate`); everything, timings included, into `report/onnx_gate.{md,json}`.
Measurements behind the candidate list: docs/performance.md.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stream.artifact import ArtifactMeta, OnnxFile
from stream.backends.base import Backend
from stream.backends.onnx import (
    CALL_OVERHEAD_TOKENS,
    FILES,
    OnnxBackend,
    Variant,
    encode_texts,
    new_session,
    sha256_file,
)
from stream.core.planning import plan_batches_by_cost, softmax
from trainer.dataset import SplitData
from trainer.gate_report import gate_markdown, quality_only
from trainer.metrics import classification_metrics
from trainer.onnx_build import (
    export_graph,
    optimize_graph,
    quantize_dynamic_file,
    quantize_static_file,
    sensitive_nodes,
)

GATE_FILE = "onnx_gate.md"
GATE_JSON = "onnx_gate.json"
SPEED_MARGIN = 0.10
CALIBRATION_TEXTS = 256


@dataclass(frozen=True)
class GateSpec:
    """int8 ships only when macro-F1 drops by at most `max_f1_drop`; the agreement floor catches
    a file that keeps F1 by flipping errors both ways (naive dynamic int8 flipped ~6%)."""

    max_f1_drop: float = 0.01
    min_agreement: float = 0.97


@dataclass
class Candidate:
    key: str
    variant: Variant
    method: str
    macro_f1: float = 0.0
    macro_f1_delta: float = 0.0
    agreement: float = 0.0
    ms_per_tweet: float = 0.0
    passed: bool = False
    error: str | None = None


@dataclass
class GateInputs:
    """What the gate needs from the data: cleaned test texts with labels, some training texts."""

    test_texts: list[str]
    test_labels: np.ndarray
    calibration_texts: list[str]


# -- scoring --------------------------------------------------------------------------------------


def _macro_f1(labels: np.ndarray, logits: np.ndarray) -> float:
    return float(classification_metrics(labels, softmax(logits))["macro_f1"])


def run_planned(
    forward: Callable[[Sequence[Sequence[int]]], np.ndarray],
    ids: list[list[int]],
    overhead_tokens: float,
    batch_size: int = 64,
) -> np.ndarray:
    """Logits in input order, grouped exactly as serve groups them."""
    out = np.zeros((len(ids), 2), dtype=np.float32)
    for group in plan_batches_by_cost([len(x) for x in ids], batch_size, overhead_tokens):
        out[group] = forward([ids[i] for i in group])
    return out


def score_candidate(
    cand: Candidate,
    *,
    backend: Backend,
    ids: list[list[int]],
    labels: np.ndarray,
    reference: np.ndarray,
    reference_f1: float,
    gate: GateSpec,
) -> None:
    logits = run_planned(backend.forward_logits, ids, backend.call_overhead_tokens)
    best = float("inf")
    for _ in range(2):  # best of two: the machine is shared and noisy
        start = time.perf_counter()
        run_planned(backend.forward_logits, ids, backend.call_overhead_tokens)
        best = min(best, time.perf_counter() - start)
    cand.macro_f1 = round(_macro_f1(labels, logits), 6)
    cand.macro_f1_delta = round(cand.macro_f1 - reference_f1, 6)
    cand.agreement = round(float(np.mean(logits.argmax(1) == reference.argmax(1))), 6)
    cand.ms_per_tweet = round(1000 * best / max(1, len(ids)), 4)
    cand.passed = (
        -cand.macro_f1_delta <= gate.max_f1_drop + 1e-9 and cand.agreement >= gate.min_agreement
    )


# -- the whole export -----------------------------------------------------------------------------


def export_artifact(
    artifact: Path,
    meta: ArtifactMeta,
    inputs: GateInputs,
    *,
    gate: GateSpec | None = None,
    threads: int = 1,
    log: Callable[[str], None] = lambda _line: None,
) -> ArtifactMeta:
    """Export, optimize, quantize, gate; write the shipped files into `artifact` and return the
    metadata with `onnx` and `metrics["onnx_gate"]` filled (the caller writes cryptosent.json)."""
    from transformers import AutoTokenizer

    from stream.core.text import TextPipeline
    from stream.inference import load_model

    gate = gate or GateSpec()
    reference_model = load_model(artifact, device="cpu", precision="fp32", num_threads=threads)
    ids = reference_model.encode(inputs.test_texts).input_ids
    torch_ms = float("inf")
    reference = np.zeros((0, 2), dtype=np.float32)
    for _ in range(2):
        start = time.perf_counter()
        reference = run_planned(
            reference_model.forward_logits, ids, reference_model.call_overhead_tokens
        )
        torch_ms = min(torch_ms, 1000 * (time.perf_counter() - start) / max(1, len(ids)))
    del reference_model
    reference_f1 = _macro_f1(inputs.test_labels, reference)
    tokenizer = AutoTokenizer.from_pretrained(
        str(artifact), local_files_only=True, trust_remote_code=False
    )
    pad_id = int(tokenizer.pad_token_id or 0)
    calib_ids = encode_texts(
        tokenizer, inputs.calibration_texts[:CALIBRATION_TEXTS], meta.max_length
    ).input_ids
    from stream.backends.onnx import pad_batch

    calibration = [pad_batch([x], pad_id) for x in calib_ids]

    with tempfile.TemporaryDirectory(prefix="cryptosent-onnx-") as tmp_name:
        tmp = Path(tmp_name)
        raw = tmp / "raw.onnx"
        log("exporting the fp32 graph")
        try:
            export_graph(artifact, raw)
        except Exception as exc:  # training's artifact stays servable with torch
            error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
            log(f"ONNX export failed: {error}")
            failed = {"error": error, "shipped": {}}
            return meta.model_copy(
                update={"onnx": {}, "metrics": {**meta.metrics, "onnx_gate": failed}}
            )
        keep = sensitive_nodes(raw)
        head = sensitive_nodes(raw, edge_layers=False)
        dyn = quantize_dynamic_file
        builders: list[tuple[Candidate, Callable[[Path], object]]] = [
            (Candidate("fp32", "fp32", "fp32, exported as is"), lambda p: shutil.copy(raw, p)),
            (
                Candidate("fp32-fused", "fp32", "fp32, ORT BERT fusion (attention/LayerNorm/GELU)"),
                lambda p: optimize_graph(raw, p, artifact),
            ),
            (
                Candidate("int8-dyn", "int8", "dynamic int8, per-tensor"),
                lambda p: dyn(raw, p, per_channel=False),
            ),
            (
                Candidate("int8-dyn-pc", "int8", "dynamic int8, per-channel"),
                lambda p: dyn(raw, p, per_channel=True),
            ),
            (
                Candidate(
                    "int8-dyn-pc-keep",
                    "int8",
                    "dynamic int8, per-channel; classifier, pooler, first and last layers fp32",
                ),
                lambda p: dyn(raw, p, per_channel=True, exclude=keep),
            ),
            (
                Candidate(
                    "int8-dyn-pc-head", "int8", "dynamic int8, per-channel; classifier, pooler fp32"
                ),
                lambda p: dyn(raw, p, per_channel=True, exclude=head),
            ),
            (
                Candidate(
                    "int8-static-qdq",
                    "int8",
                    f"static QDQ int8 (MinMax, per-channel), calibrated on {len(calibration)} "
                    "training texts; classifier, pooler, first and last layers fp32",
                ),
                lambda p: quantize_static_file(raw, p, calibration, exclude=keep),
            ),
        ]
        candidates: list[Candidate] = []
        for cand, build in builders:
            path = tmp / f"{cand.key}.onnx"
            log(f"candidate {cand.key}: {cand.method}")
            try:
                build(path)
                backend = OnnxBackend(
                    meta=meta,
                    pipeline=TextPipeline(meta.text),
                    tokenizer=tokenizer,
                    session=new_session(path, threads),
                    variant=cand.variant,
                    max_length=meta.max_length,
                    pad_id=pad_id,
                )
                score_candidate(
                    cand,
                    backend=backend,
                    ids=ids,
                    labels=inputs.test_labels,
                    reference=reference,
                    reference_f1=reference_f1,
                    gate=gate,
                )
            except Exception as exc:  # a failed candidate is reported, not fatal
                cand.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
            candidates.append(cand)
        shipped = pick_shipped(candidates)
        files: dict[str, OnnxFile] = {}
        for variant, cand in shipped.items():
            target = artifact / FILES[variant]
            shutil.copy(tmp / f"{cand.key}.onnx", target)
            files[variant] = OnnxFile(
                file=FILES[variant],
                sha256=sha256_file(target),
                method=cand.method,
                macro_f1=cand.macro_f1,
                macro_f1_delta=cand.macro_f1_delta,
                agreement=cand.agreement,
                gate_passed=True,
            )
    for variant in ("fp32", "int8"):
        if variant not in shipped:
            (artifact / FILES[variant]).unlink(missing_ok=True)
    figures: dict[str, Any] = {
        "split": "test",
        "n": len(ids),
        "gate": asdict(gate),
        "threads": threads,
        "reference": {
            "backend": "torch-cpu-fp32",
            "macro_f1": round(reference_f1, 6),
            "ms_per_tweet": round(torch_ms, 4),
        },
        "candidates": [asdict(c) for c in candidates],
        "shipped": {k: c.key for k, c in shipped.items()},
        "call_overhead_tokens": dict(CALL_OVERHEAD_TOKENS),
    }
    report_dir = artifact / "report"
    report_dir.mkdir(exist_ok=True)
    (report_dir / GATE_FILE).write_text(gate_markdown(figures), encoding="utf-8")
    (report_dir / GATE_JSON).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return meta.model_copy(
        update={"onnx": files, "metrics": {**meta.metrics, "onnx_gate": quality_only(figures)}}
    )


def pick_shipped(candidates: Sequence[Candidate]) -> dict[Variant, Candidate]:
    """Per variant, the first passing candidate in list order (simplest first) unless a later
    one is at least SPEED_MARGIN faster; int8 only when that much faster than the fp32 file.
    The margin keeps timing noise on a shared machine from choosing between equals (the fused
    fp32 graph measured 0.91-1.1x the plain export: ORT fuses at session load anyway)."""
    out: dict[Variant, Candidate] = {}
    for variant in ("fp32", "int8"):
        for cand in candidates:
            if cand.variant != variant or not cand.passed or cand.error is not None:
                continue
            held = out.get(variant)
            if held is None or _faster(cand, held):
                out[variant] = cand
    if "int8" in out and ("fp32" not in out or not _faster(out["int8"], out["fp32"])):
        del out["int8"]
    return out


def _faster(a: Candidate, b: Candidate) -> bool:
    return a.ms_per_tweet * (1 + SPEED_MARGIN) <= b.ms_per_tweet


__all__ = [
    "GATE_FILE",
    "Candidate",
    "GateInputs",
    "GateSpec",
    "export_artifact",
    "export_graph",
    "gate_markdown",
    "optimize_graph",
    "pick_shipped",
    "quantize_dynamic_file",
    "quantize_static_file",
    "score_candidate",
]


def gate_inputs_from_csv(meta: ArtifactMeta, csv: Path, settings: Any) -> GateInputs:
    """Rebuild the artifact's own test split from the CSV it was trained on (same text and data
    settings, same seed, same max_samples); refuse any other CSV."""
    from ops.errors import UserError
    from ops.settings import DataSettings
    from trainer.data import csv_fingerprint
    from trainer.dataset import load_splits

    if meta.data is None:
        raise UserError(
            "the artifact records no training data fingerprint; cannot rebuild its split"
        )
    digest = csv_fingerprint(csv)
    if digest != meta.data.csv_sha256:
        raise UserError(
            f"{csv} is not the CSV this model was trained on ({meta.data.csv_name}, "
            f"sha256 {meta.data.csv_sha256[:12]}...)",
            hint="the gate scores the model's own held-out test split",
        )
    options = meta.train_options
    data = DataSettings.model_validate(options.get("data", {}))
    rebuilt = settings.model_copy(update={"data": data, "text": meta.text})
    max_samples = options.get("train", {}).get("max_samples")
    return gate_inputs(load_splits(csv, rebuilt, max_samples=max_samples))


def gate_inputs(split: SplitData) -> GateInputs:
    return GateInputs(
        test_texts=[t for t, _ in split.test],
        test_labels=np.array([y for _, y in split.test], dtype=np.int64),
        calibration_texts=[t for t, _ in split.train],
    )
