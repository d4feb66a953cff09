"""Evaluation through the serving loader: load the saved artifact, predict, score, report.

Two entry points:
- `evaluate_trained`: right after training, on the held-out TEST split; validation only fits the
  temperature. Includes the TF-IDF baseline on the same split.
- `evaluate_artifact`: any artifact on any labeled CSV, all rows (a different dataset has no
  split to respect), cleaned with the artifact's own text settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ops.errors import UserError
from ops.settings import DataSettings, Device, Precision, Settings
from stream.artifact import ArtifactMeta
from stream.inference import load_model
from trainer.baseline import run_baseline
from trainer.calibration import fit_temperature
from trainer.crossdomain import ALL, baseline_matrix
from trainer.dataset import SplitData, load_all
from trainer.metrics import classification_metrics, model_metrics
from trainer.report import ReportData, write_report

REPORT_DIR = "report"
CROSS_DATASET_BASELINE_NOTE = (
    "n/a for a cross-dataset evaluation: a TF-IDF baseline fitted on this CSV would be scored "
    "on its own training rows, and one fitted on the model's training data cannot be rebuilt "
    "from the artifact, which stores a fingerprint of that data, not the data."
)


def _labels(rows: list[tuple[str, int]]) -> np.ndarray:
    return np.array([y for _, y in rows], dtype=np.int64)


def _texts(rows: list[tuple[str, int]]) -> list[str]:
    return [t for t, _ in rows]


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("n", "accuracy", "macro_f1", "weighted_f1", "roc_auc", "pr_auc_positive")
    out = {k: m.get(k) for k in (*keys, "pr_auc_negative", "ece")}
    if "calibration" in m:
        out["ece_before"] = m["calibration"]["ece_before"]
        out["ece_after"] = m["calibration"]["ece_after"]
    return out


def evaluate_trained(
    artifact: Path,
    meta: ArtifactMeta,
    data: SplitData,
    settings: Settings,
    *,
    training: dict[str, Any] | None = None,
    cross_domain_models: list[dict[str, Any]] | None = None,
    asset_distribution: dict[str, Any] | None = None,
) -> tuple[ArtifactMeta, dict[str, Any]]:
    """Score a freshly written artifact on the test split and write `<artifact>/report/`.

    Returns the metadata with the fitted temperature and test metrics filled in (the caller
    writes it) and the metrics.json content.
    """
    cfg = settings.train
    served = load_model(
        artifact, device=cfg.device, precision=cfg.precision, num_threads=cfg.num_threads
    )
    val_logits = served.predict_logits(_texts(data.val), cfg.eval_batch_size)
    test_logits = served.predict_logits(_texts(data.test), cfg.eval_batch_size)
    del served
    val_y, test_y = _labels(data.val), _labels(data.test)
    temperature = round(fit_temperature(val_logits, val_y), 6)
    test_metrics = model_metrics(test_y, test_logits, temperature)
    val_metrics = model_metrics(val_y, val_logits, temperature)
    baseline = run_baseline(data.train, data.val, data.test, seed=cfg.seed)
    extra: dict[str, Any] = {"validation": _summary(val_metrics)}
    if asset_distribution is not None:
        extra["asset_distribution"] = asset_distribution
    if len(data.sources) > 1:
        extra.update(
            _multi_source(
                data,
                test_logits,
                baseline.test_probs,
                temperature,
                seed=cfg.seed,
                models=cross_domain_models or [],
            )
        )

    dataset = {
        "csv_name": data.csv_name,
        "csv_sha256": data.csv_sha256,
        "rows": data.rows,
        "drop_report": data.drop_table,
        "splits": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "split_seed": settings.data.split_seed,
    }
    payload = write_report(
        artifact / REPORT_DIR,
        ReportData(
            title=f"Evaluation report: {meta.model_version}",
            model_version=meta.model_version,
            base_model=meta.base_model,
            dataset=dataset,
            evaluated_on="held-out test split",
            labels=test_y,
            logits=test_logits,
            temperature=temperature,
            model=test_metrics,
            baseline=baseline.metrics,
            baseline_probs=baseline.test_probs,
            training=training,
            extra=extra,
        ),
    )
    summary = {
        "split": "test",
        "test": _summary(test_metrics),
        "baseline_test": _summary(baseline.metrics),
        "validation": _summary(val_metrics),
        "majority_class_accuracy": payload["majority_class_accuracy"],
    }
    if "per_source" in extra:
        summary["per_source"] = extra["per_source"]
    updated = meta.model_copy(update={"temperature": temperature, "metrics": summary})
    return updated, payload


def _multi_source(
    data: SplitData,
    test_logits: np.ndarray,
    baseline_probs: np.ndarray,
    temperature: float,
    *,
    seed: int,
    models: list[dict[str, Any]],
) -> dict[str, Any]:
    """Each source's test figures, and the cross-domain matrix: the baseline's rows always,
    the fine-tuned model's "all sources" row from this model, other rows from `models`."""
    per_source: dict[str, dict[str, Any]] = {}
    groups = np.asarray(data.test_groups)
    for k, source in enumerate(data.sources):
        y = _labels(source.test)
        m = model_metrics(y, test_logits[groups == k], temperature)
        per_source[source.name] = {
            "n": m["n"],
            "macro_f1": m["macro_f1"],
            "accuracy": m["accuracy"],
            "ece_before": m["calibration"]["ece_before"],
            "ece_after": m["calibration"]["ece_after"],
            "baseline_macro_f1": classification_metrics(y, baseline_probs[groups == k])["macro_f1"],
        }
    own = {
        "trained_on": ALL,
        "sources": data.names,
        "test": {
            name: {
                "n": m["n"],
                "macro_f1": m["macro_f1"],
                "ece_after": m["ece_after"],
                "held_out": False,
            }
            for name, m in per_source.items()
        },
    }
    return {
        "per_source": per_source,
        "cross_domain": {
            "sources": data.names,
            "metric": "macro_f1 on each source's test split",
            "model": [own, *models],
            "baseline": baseline_matrix(data, seed=seed),
        },
    }


@dataclass
class CrossEvaluation:
    report_dir: Path
    metrics: dict[str, Any]


def evaluate_artifact(
    model_dir: Path,
    csv: Path,
    mapping: DataSettings,
    *,
    out_dir: Path | None = None,
    device: Device = "auto",
    precision: Precision = "auto",
    batch_size: int = 64,
    num_threads: int | None = None,
) -> CrossEvaluation:
    """Score an artifact on every usable labeled row of `csv` and write a report."""
    served = load_model(model_dir, device=device, precision=precision, num_threads=num_threads)
    meta = served.meta
    # The artifact's text settings, not the caller's: the model is scored on text cleaned the
    # way it was trained on and the way it is served.
    data = load_all(csv, mapping, meta.text)
    if not data.rows_kept:
        raise UserError(f"no usable Positive/Negative rows in {csv} after cleaning")
    labels = _labels(data.rows_kept)
    logits = served.predict_logits(_texts(data.rows_kept), batch_size)
    metrics = model_metrics(labels, logits, meta.temperature)
    report_dir = out_dir or (model_dir / f"report-{csv.stem}")
    payload = write_report(
        report_dir,
        ReportData(
            title=f"Cross-dataset evaluation: {meta.model_version} on {csv.name}",
            model_version=meta.model_version,
            base_model=meta.base_model,
            dataset={
                "csv_name": data.csv_name,
                "csv_sha256": data.csv_sha256,
                "rows": data.rows,
                "drop_report": data.drop_table,
                "trained_on": meta.data.csv_name if meta.data else None,
            },
            evaluated_on=f"all usable rows of {csv.name} (no split)",
            labels=labels,
            logits=logits,
            temperature=meta.temperature,
            model=metrics,
            baseline=None,
            baseline_note=CROSS_DATASET_BASELINE_NOTE,
        ),
    )
    return CrossEvaluation(report_dir=report_dir, metrics=payload)


__all__ = [
    "CrossEvaluation",
    "classification_metrics",
    "evaluate_artifact",
    "evaluate_trained",
]
