"""Cross-domain figures: train on some sources, test on each source's own test split.

Rows of the matrix are training sets (all sources, each leave-one-source-out set, each single
source; with two sources "without A" is "only B", so duplicates are listed once), columns are
the sources' test splits, cells are macro-F1. The TF-IDF + LR baseline gets the same matrix,
fitted and tuned on the same training set's train and validation rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ops.settings import Settings
from trainer.baseline import run_baseline
from trainer.dataset import SplitData
from trainer.metrics import model_metrics

__all__ = [
    "ALL",
    "baseline_matrix",
    "cross_domain_markdown",
    "cross_domain_models",
    "per_source_markdown",
    "scores_per_source",
    "training_sets",
]

ALL = "all sources"


def training_sets(names: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(label, source names) for all, each leave-one-out and each single source, without
    repeats."""
    out: list[tuple[str, list[str]]] = [(ALL, list(names))]
    if len(names) < 2:
        return out
    seen = {tuple(names)}
    for name in names:
        rest = [n for n in names if n != name]
        if tuple(rest) not in seen:
            seen.add(tuple(rest))
            out.append((f"without {name}" if len(rest) > 1 else f"only {rest[0]}", rest))
    for name in names:
        if (name,) not in seen:
            seen.add((name,))
            out.append((f"only {name}", [name]))
    return out


def scores_per_source(
    data: SplitData,
    logits_of: Callable[[list[str]], np.ndarray],
    temperature: float,
    trained_on: Sequence[str],
) -> dict[str, dict[str, Any]]:
    """Macro-F1 and ECE (after T) of one model on every source's test split."""
    out: dict[str, dict[str, Any]] = {}
    for source in data.sources:
        y = np.array([label for _, label in source.test], dtype=np.int64)
        m = model_metrics(y, logits_of([t for t, _ in source.test]), temperature)
        out[source.name] = {
            "n": m["n"],
            "macro_f1": m["macro_f1"],
            "ece_after": m["calibration"]["ece_after"],
            "held_out": source.name not in trained_on,
        }
    return out


def baseline_matrix(data: SplitData, *, seed: int) -> list[dict[str, Any]]:
    """The TF-IDF + LR row for every training set: one fit per set, scored on every source."""
    from sklearn.metrics import f1_score

    groups = np.asarray(data.test_groups)
    y = np.array([label for _, label in data.test], dtype=np.int64)
    rows: list[dict[str, Any]] = []
    for label, names in training_sets(data.names):
        sub = data.subset(names)
        pred = run_baseline(sub.train, sub.val, data.test, seed=seed).test_probs.argmax(axis=1)
        cells: dict[str, Any] = {}
        for k, source in enumerate(data.sources):
            mask = groups == k
            f1 = f1_score(y[mask], pred[mask], labels=[0, 1], average="macro", zero_division=0)
            cells[source.name] = {
                "n": int(mask.sum()),
                "macro_f1": round(float(f1), 6),
                "held_out": source.name not in names,
            }
        rows.append({"trained_on": label, "sources": names, "test": cells})
    return rows


def cross_domain_markdown(cross: dict[str, Any]) -> list[str]:
    """The matrix as markdown: one table, model and baseline side by side per cell."""
    names: list[str] = cross["sources"]
    base = {r["trained_on"]: r["test"] for r in cross.get("baseline", [])}
    model = {r["trained_on"]: r["test"] for r in cross.get("model", [])}
    out = [
        "## Cross-domain (macro-F1 on each source's test split)",
        "",
        "Cells: fine-tuned model / TF-IDF + LR, each trained on the row's sources (train and "
        "validation splits only). `*`: the source was held out of training. n/a: that "
        "fine-tuned model was not trained (see `cryptosent train --cross-domain`).",
        "",
        "| trained on | " + " | ".join(names) + " |",
        "|---|" + "|".join("---" for _ in names) + "|",
    ]
    for label in [r["trained_on"] for r in cross.get("baseline", [])]:
        cells = []
        for name in names:
            b = base.get(label, {}).get(name, {})
            m = model.get(label, {}).get(name, {})
            star = "*" if b.get("held_out") else ""
            mf = m.get("macro_f1")
            bf = b.get("macro_f1")
            cells.append(
                f"{'n/a' if mf is None else f'{mf:.4f}'} / {'n/a' if bf is None else f'{bf:.4f}'}"
                f"{star}"
            )
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("")
    return out


def per_source_markdown(per_source: dict[str, dict[str, Any]]) -> list[str]:
    out = [
        "## Per source (test split of each)",
        "",
        "| source | rows | macro-F1 | TF-IDF + LR macro-F1 | ECE before T | ECE after T |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in per_source.items():
        out.append(
            f"| {name} | {m['n']} | {m['macro_f1']:.4f} | {m['baseline_macro_f1']:.4f} | "
            f"{m['ece_before']:.4f} | {m['ece_after']:.4f} |"
        )
    out.append("")
    return out


def _train_and_score(
    settings: Settings, data: SplitData, label: str, names: list[str], progress: bool
) -> dict[str, Any]:
    import tempfile
    from functools import partial

    from stream.inference import load_model
    from trainer.train import train_on

    with tempfile.TemporaryDirectory(prefix="cryptosent-xdomain-") as tmp:
        sub_cfg = settings.train.model_copy(update={"out": Path(tmp) / "model"})
        sub = settings.model_copy(update={"train": sub_cfg})
        outcome = train_on(sub, data.subset(names), progress=progress)
        served = load_model(
            outcome.artifact, device=sub_cfg.device, num_threads=sub_cfg.num_threads
        )
        logits_of = partial(served.predict_logits, batch_size=sub_cfg.eval_batch_size)
        scores = scores_per_source(data, logits_of, served.temperature, names)
        del served
    training = outcome.metrics.get("training") or {}
    return {
        "trained_on": label,
        "sources": names,
        "test": scores,
        "best_val_macro_f1": training.get("best_val_macro_f1"),
        "train_seconds": training.get("train_seconds"),
    }


def cross_domain_models(
    settings: Settings, data: SplitData, *, progress: bool, workers: int = 0
) -> Callable[[], list[dict[str, Any]]]:
    """One fine-tuned model per training set other than "all sources", each written to a
    temporary artifact, scored through the serving loader on every source's test split, then
    deleted. Returns a function that gives the rows.

    `workers` 0 trains them here, one after another, before the caller's main model (one GPU,
    or one core); `workers` >= 1 trains them in that many worker processes, started now, while
    the caller trains the main model; the rows are collected when the function is called. On a
    shared CPU separate single-threaded processes go further than one process with several threads
    (measured: 7 samples/s per 1-thread process vs 2.7 for one 2-thread process, 2 busy cores).
    """
    sets = training_sets(data.names)[1:]
    if workers <= 0:
        rows = [_train_and_score(settings, data, label, names, progress) for label, names in sets]
        return lambda: rows
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a forked copy of a process that has touched torch's thread pools can hang.
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(sets)), mp_context=multiprocessing.get_context("spawn")
    )
    futures = [
        pool.submit(_train_and_score, settings, data, label, names, False) for label, names in sets
    ]

    def collect() -> list[dict[str, Any]]:
        try:
            return [f.result() for f in futures]
        finally:
            pool.shutdown(cancel_futures=True)

    def cancel() -> None:
        # The main model failed or was stopped: end the workers now, not after their runs.
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)

    collect.cancel = cancel  # type: ignore[attr-defined]
    return collect
