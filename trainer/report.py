"""The evaluation report: metrics.json, report.md and four PNGs in one directory.

report.md is what a person reads first, so it leads with the model-vs-baseline table and says
exactly which rows were evaluated; metrics.json holds the same numbers for machines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stream.core.planning import softmax
from trainer.calibration import DEFAULT_BINS, reliability_bins
from trainer.crossdomain import cross_domain_markdown, per_source_markdown
from trainer.metrics import LABELS, NEGATIVE, POSITIVE, majority_accuracy
from trainer.report_assets import asset_markdown

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
FIGURES = ("confusion_matrix.png", "roc_curve.png", "pr_curve.png", "reliability_diagram.png")


@dataclass
class ReportData:
    title: str
    model_version: str
    base_model: str
    # csv_name, csv_sha256, rows (the drop report) and, for a trained model, split sizes.
    dataset: dict[str, Any]
    evaluated_on: str
    labels: np.ndarray
    logits: np.ndarray
    temperature: float
    model: dict[str, Any]
    baseline: dict[str, Any] | None = None
    baseline_probs: np.ndarray | None = None
    baseline_note: str | None = None
    training: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def write_report(directory: Path, data: ReportData) -> dict[str, Any]:
    """Write the report into `directory` (created) and return the metrics.json content."""
    directory.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "title": data.title,
        "model_version": data.model_version,
        "base_model": data.base_model,
        "evaluated_on": data.evaluated_on,
        "dataset": data.dataset,
        "majority_class_accuracy": round(majority_accuracy(data.labels), 6),
        "model": data.model,
        "baseline": data.baseline,
        "baseline_note": data.baseline_note,
        "training": data.training,
        "figures": list(FIGURES),
        **data.extra,
    }
    (directory / METRICS_FILE).write_text(
        json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8"
    )
    _plot_all(directory, data)
    (directory / REPORT_FILE).write_text(_markdown(payload), encoding="utf-8")
    return payload


# -- markdown -------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        # Learning rates (5e-05) would print as 0.0001 in fixed notation.
        if value != 0 and abs(value) < 10 ** -(digits - 1):
            return f"{value:.3g}"
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _markdown(p: dict[str, Any]) -> str:
    model: dict[str, Any] = p["model"]
    base: dict[str, Any] | None = p["baseline"]
    cal: dict[str, Any] = model["calibration"]
    ds: dict[str, Any] = p["dataset"]
    out = [
        f"# {p['title']}",
        "",
        f"- model_version: `{p['model_version']}`",
        f"- base model: `{p['base_model']}`",
        f"- evaluated on: {p['evaluated_on']} ({model['n']} rows)",
        f"- data: `{ds.get('csv_name')}` (sha256 `{str(ds.get('csv_sha256', ''))[:16]}…`)",
        f"- temperature: {_fmt(cal['temperature'])} (fitted on validation; "
        f"ECE {_fmt(cal['ece_before'])} → {_fmt(cal['ece_after'])})",
        "",
        "## Model vs baseline",
        "",
    ]
    keys = [
        ("accuracy", "accuracy"),
        ("macro-F1", "macro_f1"),
        ("weighted F1", "weighted_f1"),
        ("ROC-AUC", "roc_auc"),
        ("PR-AUC (POSITIVE)", "pr_auc_positive"),
        ("PR-AUC (NEGATIVE)", "pr_auc_negative"),
        ("ECE (15 bins)", "ece"),
    ]
    rows = [
        [name, _fmt(model.get(key)), _fmt(base.get(key)) if base else "n/a"] for name, key in keys
    ]
    rows[-1][0] = "ECE (15 bins; model after T)"
    rows.append(["majority-class accuracy", _fmt(p["majority_class_accuracy"]), ""])
    out += _table(["metric", "fine-tuned model", "TF-IDF + LR baseline"], rows)
    out.append("")
    if base:
        out.append(f"Baseline: {base.get('description', '')}.")
    elif p.get("baseline_note"):
        out.append(f"Baseline: {p['baseline_note']}")
    out += ["", "## Per class (fine-tuned model)", ""]
    out += _table(
        ["class", "precision", "recall", "F1", "support"],
        [
            [label, _fmt(c["precision"]), _fmt(c["recall"]), _fmt(c["f1"]), str(c["support"])]
            for label, c in model["per_class"].items()
        ],
    )
    if base:
        out += ["", "Baseline per class:", ""]
        out += _table(
            ["class", "precision", "recall", "F1", "support"],
            [
                [label, _fmt(c["precision"]), _fmt(c["recall"]), _fmt(c["f1"]), str(c["support"])]
                for label, c in base["per_class"].items()
            ],
        )
    cm = model["confusion_matrix"]
    out += ["", "## Confusion matrix (rows: true, columns: predicted)", ""]
    out += _table(
        ["", *cm["labels"]],
        [[cm["labels"][i], *[str(v) for v in row]] for i, row in enumerate(cm["matrix"])],
    )
    out += [
        "",
        "## Calibration",
        "",
        "Expected calibration error over 15 equal-width bins of the max probability, on the "
        "evaluated rows; T is a single scalar fitted by minimising NLL on the validation split "
        "and saved in the artifact, so serving returns the calibrated probabilities.",
        "",
    ]
    out += _table(
        ["", "before (T=1)", f"after (T={_fmt(cal['temperature'], 3)})"],
        [
            ["ECE", _fmt(cal["ece_before"]), _fmt(cal["ece_after"])],
            ["NLL", _fmt(cal["nll_before"]), _fmt(cal["nll_after"])],
        ],
    )
    if p.get("per_source"):
        out += ["", *per_source_markdown(p["per_source"])]
    if p.get("cross_domain"):
        out += ["", *cross_domain_markdown(p["cross_domain"])]
    out += ["", "## Data", ""]
    rows_info: dict[str, Any] = ds.get("rows", {})
    drops: list[dict[str, Any]] = ds.get("drop_report", [])
    if drops:
        table = [["rows read", str(rows_info.get("raw_rows", "?"))]]
        table += [
            [
                f"− {d['source'] + ': ' if 'source' in d else ''}{d['description']}",
                str(d["removed"]),
            ]
            for d in drops
        ]
        table.append(["= rows kept", str(rows_info.get("kept", "?"))])
        table += [
            [f"  {k.removeprefix('kept_').upper()}", str(v)]
            for k, v in rows_info.items()
            if k.startswith("kept_")
        ]
        out += _table(["step", "rows"], table)
        out.append("")
    elif rows_info:
        out += _table(["count", "rows"], [[k, str(v)] for k, v in rows_info.items()])
        out.append("")
    splits: dict[str, Any] = ds.get("splits", {})
    if splits:
        out += _table(["split", "rows"], [[k, str(v)] for k, v in splits.items()])
        out.append("")
    if p.get("asset_distribution"):
        out += asset_markdown(p["asset_distribution"])
    training: dict[str, Any] | None = p.get("training")
    if training:
        out += ["## Training", ""]
        out += _table(
            ["", "value"], [[k, _fmt(v)] for k, v in training.items() if not isinstance(v, dict)]
        )
        out.append("")
    out += ["## Figures", ""]
    out += [f"- [{name}]({name})" for name in FIGURES]
    out += ["", *[f"![{name}]({name})" for name in FIGURES], ""]
    return "\n".join(out)


# -- figures --------------------------------------------------------------------------------------


def _plot_all(directory: Path, data: ReportData) -> None:
    import matplotlib

    # Agg renders to files without a display; set before pyplot is imported anywhere.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(data.labels).astype(np.int64)
    raw = softmax(data.logits, 1.0) if len(y) else np.zeros((0, 2))
    scaled = softmax(data.logits, data.temperature) if len(y) else np.zeros((0, 2))
    both = len(np.unique(y)) == 2

    with plt.style.context("default"):
        _confusion(plt, directory, data.model["confusion_matrix"]["matrix"])
        _roc(plt, directory, y=y, probs=scaled, baseline=data.baseline_probs, both=both)
        _pr(plt, directory, y=y, probs=scaled, baseline=data.baseline_probs, both=both)
        _reliability(plt, directory, y=y, raw=raw, scaled=scaled, temperature=data.temperature)


def _confusion(plt: Any, directory: Path, matrix: list[list[int]]) -> None:
    m = np.asarray(matrix, dtype=np.int64)
    fig, ax = plt.subplots(figsize=(4.6, 4.0), dpi=110)
    ax.imshow(m, cmap="Blues")
    row_totals = m.sum(axis=1, keepdims=True).clip(min=1)
    for i in range(2):
        for j in range(2):
            share = m[i, j] / row_totals[i, 0]
            ax.text(
                j,
                i,
                f"{m[i, j]}\n({share:.1%})",
                ha="center",
                va="center",
                color="white" if m[i, j] > m.max() / 2 else "black",
            )
    names = [str(label) for label in LABELS]
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (row %)")
    fig.tight_layout()
    fig.savefig(directory / "confusion_matrix.png")
    plt.close(fig)


def _undefined(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"{what} undefined:\nthe labels hold one class", ha="center", va="center")


def _roc(
    plt: Any,
    directory: Path,
    *,
    y: np.ndarray,
    probs: np.ndarray,
    baseline: np.ndarray | None,
    both: bool,
) -> None:
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(4.8, 4.4), dpi=110)
    if both:
        for name, p, style in (("model", probs, "-"), ("TF-IDF+LR", baseline, "--")):
            if p is None:
                continue
            fpr, tpr, _ = roc_curve(y, p[:, POSITIVE])
            auc = roc_auc_score(y, p[:, POSITIVE])
            ax.plot(fpr, tpr, style, label=f"{name} (AUC {auc:.3f})")
        ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
        ax.legend(loc="lower right")
    else:
        _undefined(ax, "ROC")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC (positive class: POSITIVE)")
    fig.tight_layout()
    fig.savefig(directory / "roc_curve.png")
    plt.close(fig)


def _pr(
    plt: Any,
    directory: Path,
    *,
    y: np.ndarray,
    probs: np.ndarray,
    baseline: np.ndarray | None,
    both: bool,
) -> None:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, axes = plt.subplots(1, 2, figsize=(9.0, 4.2), dpi=110)
    for ax, cls in zip(axes, (POSITIVE, NEGATIVE), strict=True):
        name = str(LABELS[cls])
        if both:
            for who, p, style in (("model", probs, "-"), ("TF-IDF+LR", baseline, "--")):
                if p is None:
                    continue
                prec, rec, _ = precision_recall_curve(y == cls, p[:, cls])
                ap = average_precision_score(y == cls, p[:, cls])
                ax.plot(rec, prec, style, drawstyle="steps-post", label=f"{who} (AP {ap:.3f})")
            prevalence = float((y == cls).mean())
            ax.axhline(
                prevalence, linestyle=":", color="grey", label=f"prevalence {prevalence:.2f}"
            )
            ax.legend(loc="lower left")
        else:
            _undefined(ax, "PR curve")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"Precision-recall ({name})")
    fig.tight_layout()
    fig.savefig(directory / "pr_curve.png")
    plt.close(fig)


def _reliability(
    plt: Any,
    directory: Path,
    *,
    y: np.ndarray,
    raw: np.ndarray,
    scaled: np.ndarray,
    temperature: float,
) -> None:
    from trainer.calibration import expected_calibration_error

    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(5.2, 6.0), dpi=110, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    width = 1.0 / DEFAULT_BINS
    for name, p, color, offset in (
        ("before (T=1)", raw, "tab:red", -width / 4),
        (f"after (T={temperature:.2f})", scaled, "tab:blue", width / 4),
    ):
        if len(y) == 0:
            continue
        bins = [b for b in reliability_bins(p, y, DEFAULT_BINS) if b.count]
        ece = expected_calibration_error(p, y, DEFAULT_BINS)
        centers = [(b.lower + b.upper) / 2 + offset for b in bins]
        ax.bar(
            centers,
            [b.accuracy for b in bins],
            width=width / 2,
            alpha=0.6,
            color=color,
            label=f"{name}: ECE {ece:.3f}",
        )
        ax.plot([b.confidence for b in bins], [b.accuracy for b in bins], "o-", color=color, ms=3)
        hist.bar(centers, [b.count for b in bins], width=width / 2, alpha=0.6, color=color)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability diagram (max probability, 15 bins)")
    ax.legend(loc="upper left")
    hist.set_xlabel("confidence")
    hist.set_ylabel("rows")
    fig.tight_layout()
    fig.savefig(directory / "reliability_diagram.png")
    plt.close(fig)
