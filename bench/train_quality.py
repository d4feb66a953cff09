"""Benchmark: fine-tuned MiniLM vs TF-IDF + LR on StockTwits $ETH, and training throughput.

Not a test: run it by hand (about 20-30 minutes on two CPU cores):

    nice -n 5 .venv/bin/python bench/train_quality.py

1. Token lengths of the cleaned training texts (to justify max_length).
2. `trainer.train.train` - the same code path as `cryptosent train` - on the full CSV; the
   test-split macro-F1, accuracy and ECE before/after temperature scaling of the model and of
   the baseline are read back from the artifact's report.
3. Training throughput of the same base model for a fixed number of optimizer steps: dynamic
   padding + length grouping vs padding every batch to 128 (the original notebook's setting).

Writes bench/results/train_quality.json and bench/results/train_quality.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ops.settings import Settings, TrainSettings  # noqa: E402
from trainer.dataset import load_splits  # noqa: E402

DEFAULT_CSV = ROOT.parent / "shared" / "data" / "stocktwits_eth_2022_labeled.csv"
RESULTS = ROOT / "bench" / "results"
TARGET_F1_MARGIN = 0.03
TARGET_ECE = 0.05
TARGET_SPEEDUP = 2.0
# Why the benchmark's options differ from `cryptosent train`'s defaults; recorded in the results.
TUNING_NOTE = (
    "A first run with the trainer defaults (lr 5e-5, 3 epochs, max_length 64) was stopped at "
    "epoch 1.5 with validation macro-F1 0.700 -> 0.732 -> 0.740 at epochs 0.5/1/1.5, against "
    "0.78 for the TF-IDF baseline on validation: too slow to close the gap before the linear "
    "decay ends. Short runs showed MiniLM (22M parameters, new head on an untuned pooler) "
    "learning far faster at 1e-4, so this benchmark uses lr 1e-4 over 4 epochs, patience 3 "
    "evaluations. The choice rests on validation curves; for full disclosure, those short "
    "quick-profile runs also printed their 150-row test scores, and those rows are a subset "
    "of this benchmark's test split."
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def token_lengths(tokenizer: Any, texts: list[str]) -> dict[str, Any]:
    lengths = np.array([len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]])
    pct = {f"p{q}": int(np.percentile(lengths, q)) for q in (50, 75, 90, 95, 99)}
    return {
        "n": len(lengths),
        **pct,
        "max": int(lengths.max()),
        "share_le_64": round(float((lengths <= 64).mean()), 4),
        "share_le_96": round(float((lengths <= 96).mean()), 4),
        "share_le_128": round(float((lengths <= 128).mean()), 4),
    }


def throughput(settings: Settings, csv: Path, steps: int, batch_size: int) -> dict[str, Any]:
    """Same base model, same rows, same seed; only padding/grouping differ."""
    import torch
    from transformers import set_seed

    from stream.inference import resolve_device, resolve_dtype
    from trainer.base_model import load_base_model, resolve_base_model
    from trainer.throughput import Padding, measure_throughput

    cfg = settings.train.model_copy(update={"max_length": 128, "batch_size": batch_size})
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(device, cfg.precision)
    data = load_splits(csv, settings, max_samples=None)
    texts = [t for t, _ in data.train]
    labels = [y for _, y in data.train]
    out: dict[str, Any] = {}
    paddings: tuple[Padding, Padding] = ("fixed", "dynamic")
    for padding in paddings:
        set_seed(cfg.seed)
        model, tokenizer = load_base_model(resolve_base_model(cfg.base_model))
        enc = tokenizer(texts, truncation=True, max_length=cfg.max_length, padding=False)
        ids = [list(x) for x in enc["input_ids"]]
        out[padding] = measure_throughput(
            model,
            ids,
            labels,
            cfg,
            steps=steps,
            padding=padding,
            pad_id=int(tokenizer.pad_token_id or 0),
            device=device,
            autocast_dtype=dtype,
        )
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    out["speedup"] = round(out["dynamic"]["samples_per_s"] / out["fixed"]["samples_per_s"], 2)
    out["max_length"] = cfg.max_length
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    p.add_argument("--out", type=Path, default=ROOT / "models" / "bench-train-quality")
    # Tuned on validation, see TUNING_NOTE.
    p.add_argument("--epochs", type=float, default=4.0)
    p.add_argument("--batch-size", type=int, default=25)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--evals-per-epoch", type=int, default=2)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--throughput-steps", type=int, default=30)
    p.add_argument("--skip-training", action="store_true", help="throughput only")
    args = p.parse_args(argv)
    # As SystemExit, a `kill` unwinds through the trainer's cleanup of its staging directory.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if not args.csv.is_file():
        print(f"error: {args.csv} not found", file=sys.stderr)
        return 2

    from trainer.base_model import load_base_model, quiet_transformers, resolve_base_model
    from trainer.train import train

    quiet_transformers()
    started = time.perf_counter()
    train_cfg = TrainSettings(
        base_model="minilm",
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        max_length=args.max_length,
        evals_per_epoch=args.evals_per_epoch,
        early_stopping_patience=args.patience,
        seed=args.seed,
        num_threads=args.threads,
        out=args.out,
        overwrite=True,
    )
    settings = Settings(_env_file=None, train=train_cfg)
    result: dict[str, Any] = {
        "benchmark": "train_quality",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "torch_threads": None,
            "platform": platform.platform(),
        },
        "csv": args.csv.name,
        "options": train_cfg.model_dump(mode="json"),
        "tuning_note": TUNING_NOTE,
    }
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result["machine"]["torch_threads"] = torch.get_num_threads()

    _, tokenizer = load_base_model(resolve_base_model("minilm"))
    data = load_splits(args.csv, settings, max_samples=None)
    result["token_lengths_train"] = token_lengths(tokenizer, [t for t, _ in data.train])

    if not args.skip_training:
        t0 = time.perf_counter()
        outcome = train(settings, args.csv, progress=True)
        train_wall = time.perf_counter() - t0
        report = json.loads((outcome.artifact / "report" / "metrics.json").read_text("utf-8"))
        model, base = report["model"], report["baseline"]
        result["split"] = report["dataset"]["splits"]
        result["drop_report"] = report["dataset"]["rows"]
        result["model"] = {
            "model_version": outcome.meta.model_version,
            "macro_f1": model["macro_f1"],
            "accuracy": model["accuracy"],
            "weighted_f1": model["weighted_f1"],
            "roc_auc": model["roc_auc"],
            "pr_auc_negative": model["pr_auc_negative"],
            "ece_before": model["calibration"]["ece_before"],
            "ece_after": model["calibration"]["ece_after"],
            "temperature": model["calibration"]["temperature"],
        }
        result["baseline"] = {
            "description": base["description"],
            "macro_f1": base["macro_f1"],
            "accuracy": base["accuracy"],
            "weighted_f1": base["weighted_f1"],
            "roc_auc": base["roc_auc"],
            "pr_auc_negative": base["pr_auc_negative"],
            "ece": base["ece"],
        }
        result["majority_class_accuracy"] = report["majority_class_accuracy"]
        result["training"] = {**report["training"], "wall_seconds_incl_eval": round(train_wall, 1)}
        margin = model["macro_f1"] - base["macro_f1"]
        result["targets"] = {
            "macro_f1_margin": round(margin, 4),
            "macro_f1_margin_target": TARGET_F1_MARGIN,
            "macro_f1_margin_met": margin >= TARGET_F1_MARGIN,
            "ece_after_target": TARGET_ECE,
            "ece_after_met": model["calibration"]["ece_after"] <= TARGET_ECE,
        }
    tp = throughput(settings, args.csv, args.throughput_steps, args.batch_size)
    result["throughput"] = tp
    result.setdefault("targets", {}).update(
        {"speedup_target": TARGET_SPEEDUP, "speedup_met": tp["speedup"] >= TARGET_SPEEDUP}
    )
    result["total_seconds"] = round(time.perf_counter() - started, 1)

    write_results(result, RESULTS)
    print(json.dumps(result.get("targets", {}), indent=2))
    return 0


def write_results(result: dict[str, Any], results: Path) -> None:
    """The JSON and markdown, keeping the multi-source section that bench/train_cross_domain.py
    owns in both files: a single-source run does not erase it."""
    from train_cross_domain import MD_MARKER

    results.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results / "train_quality.json", results / "train_quality.md"
    previous = json.loads(json_path.read_text("utf-8")) if json_path.is_file() else {}
    if "cross_domain" in previous:
        result["cross_domain"] = previous["cross_domain"]
    _, marker, tail = (md_path.read_text("utf-8") if md_path.is_file() else "").partition(MD_MARKER)
    json_path.write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    md_path.write_text(markdown(result).rstrip("\n") + "\n" + marker + tail, "utf-8")


def _f(v: Any) -> str:
    return "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# Benchmark: training quality and throughput",
        "",
        f"- date: {r['date']}",
        f"- machine: {m['cpu']}, {m['cores']} cores (torch threads {m['torch_threads']})",
        f"- command: `{r['command']}`",
        f"- data: `{r['csv']}`; total wall time {r['total_seconds']} s",
        f"- options: lr {r['options']['learning_rate']}, epochs {r['options']['epochs']}, "
        f"batch {r['options']['batch_size']}, max_length {r['options']['max_length']}, "
        f"class-weighted loss {r['options']['class_weighted_loss']}",
        f"- tuning: {r['tuning_note']}",
        "",
    ]
    if "model" in r:
        mod, base, t = r["model"], r["baseline"], r["training"]
        lines += [
            f"Test split ({r['split']['test']} rows; train {r['split']['train']}, val "
            f"{r['split']['val']}), majority-class accuracy "
            f"{_f(r['majority_class_accuracy'])}.",
            "",
            "| | macro-F1 | accuracy | weighted F1 | ROC-AUC | PR-AUC (NEG) | ECE before T "
            "| ECE after T |",
            "|---|---|---|---|---|---|---|---|",
            f"| fine-tuned MiniLM | {_f(mod['macro_f1'])} | {_f(mod['accuracy'])} | "
            f"{_f(mod['weighted_f1'])} | {_f(mod['roc_auc'])} | {_f(mod['pr_auc_negative'])} | "
            f"{_f(mod['ece_before'])} | {_f(mod['ece_after'])} (T={_f(mod['temperature'])}) |",
            f"| TF-IDF + LR | {_f(base['macro_f1'])} | {_f(base['accuracy'])} | "
            f"{_f(base['weighted_f1'])} | {_f(base['roc_auc'])} | {_f(base['pr_auc_negative'])} "
            f"| {_f(base['ece'])} | n/a |",
            "",
            f"Training: {t['steps']} steps, {t['epochs_completed']} epochs, early stop "
            f"{t['stopped_early']}, best step {t['best_step']} (val macro-F1 "
            f"{_f(t['best_val_macro_f1'])}), {t['train_seconds']} s training, "
            f"{t['train_samples_per_s']} samples/s, {t['wall_seconds_incl_eval']} s with "
            "evaluation and report.",
            "",
        ]
    tl = r["token_lengths_train"]
    lines += [
        f"Token lengths of the cleaned training texts (MiniLM WordPiece, incl. [CLS]/[SEP]): "
        f"p50 {tl['p50']}, p90 {tl['p90']}, p95 {tl['p95']}, p99 {tl['p99']}, max {tl['max']}; "
        f"≤64: {tl['share_le_64']:.1%}, ≤128: {tl['share_le_128']:.1%}.",
        "",
    ]
    tp = r["throughput"]
    lines += [
        f"## Training throughput ({tp['fixed']['steps']} steps each, batch "
        f"{tp['fixed']['batch_size']}, max_length {tp['max_length']})",
        "",
        "| batching | samples/s | seconds | padding share |",
        "|---|---|---|---|",
        f"| fixed padding to {tp['max_length']} (notebook) | {tp['fixed']['samples_per_s']} | "
        f"{tp['fixed']['seconds']} | {tp['fixed']['padding_share']:.1%} |",
        f"| dynamic padding + length grouping | {tp['dynamic']['samples_per_s']} | "
        f"{tp['dynamic']['seconds']} | {tp['dynamic']['padding_share']:.1%} |",
        "",
        f"Speed-up: {tp['speedup']}x.",
        "",
        "## Targets",
        "",
        "```json",
        json.dumps(r.get("targets", {}), indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
