"""Benchmark: multi-source training and the cross-domain matrix, into train_quality.{json,md}.

Not a test. Either trains (the same code path as `cryptosent train --cross-domain`):

    nice -n 5 .venv/bin/python bench/train_cross_domain.py \\
        --csv ../shared/data/stocktwits_eth_2022_labeled.csv:name=stocktwits \\
        --csv ../shared/data/twitter_financial_news.csv:name=tfn -- --epochs 2 --threads 1 ...

(everything after `--` goes to `cryptosent train`), or reads back a finished run:

    .venv/bin/python bench/train_cross_domain.py --artifact models/xd --wall-seconds 1712 \\
        --lever base=/tmp/lever-base --lever smooth=/tmp/lever-smooth

`--lever NAME=ARTIFACT` adds a short lever run's validation figures (what the choice rests on)
and its option values. The result goes under the `cross_domain` key of
bench/results/train_quality.json (the single-source figures there are kept) and as a section
appended to bench/results/train_quality.md. `--key` files a run with another base model beside
it (e.g. `cross_domain_bge_small`); `--command` and `--workers` record how a run that is read
back was trained.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
TARGET_OWN_MARGIN = 0.05  # on StockTwits test, model minus TF-IDF+LR
TARGET_HELD_OUT_MARGIN = 0.08  # every held-out source, leave-one-source-out
TARGET_ECE = 0.05
TARGET_WALL_S = 1800.0
KEY = "cross_domain"


def md_marker(key: str) -> str:
    """Each key's section of train_quality.md starts at its own marker (the default key keeps
    the marker the file already has)."""
    return "\n<!-- cross-domain -->\n" if key == KEY else f"\n<!-- {key} -->\n"


def replace_section(md: str, key: str, body: str) -> str:
    """`md` with `key`'s section (from its marker to the next marker or the end) set to `body`;
    a new key's section goes at the end."""
    marker = md_marker(key)
    head, found, rest = md.partition(marker)
    if not found:
        return md.rstrip("\n") + "\n" + marker + "\n" + body
    after = rest.find("\n<!-- ")
    tail = rest[after:] if after >= 0 else ""
    return head.rstrip("\n") + "\n" + marker + "\n" + body.rstrip("\n") + "\n" + tail


LEVER_OPTIONS = (
    "base_model",
    "max_samples",
    "epochs",
    "learning_rate",
    "label_smoothing",
    "source_balance",
    "layer_lr_decay",
    "head_lr_scale",
    "ema_decay",
)


def _evals(artifact: Path) -> list[dict[str, Any]]:
    lines = (artifact / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in (json.loads(x) for x in lines) if r.get("type") == "eval"]


def lever_summary(name: str, artifact: Path) -> dict[str, Any]:
    """Validation only: the best evaluation of a short lever run, and its options."""
    meta = json.loads((artifact / "cryptosent.json").read_text(encoding="utf-8"))
    evals = _evals(artifact)
    key = "val_mean_source_macro_f1" if "val_mean_source_macro_f1" in evals[0] else "val_macro_f1"
    best = max(evals, key=lambda e: (e[key], -e["val_loss"]))
    opts = meta["train_options"]["train"]
    live = f"live_{key}"
    return {
        "lever": name,
        "selected_on": key,
        "best_val": best[key],
        "best_epoch": best["epoch"],
        "val_per_source": {k: v for k, v in best.items() if k.startswith("val_macro_f1_source")},
        "curve": [round(e[key], 4) for e in evals],
        # With a weight average the candidates are the averaged weights; the live weights' own
        # best shows what averaging changed.
        "best_val_live": max(e[live] for e in evals) if live in evals[0] else None,
        "curve_live": [round(e[live], 4) for e in evals] if live in evals[0] else None,
        "options": {k: opts.get(k) for k in LEVER_OPTIONS},
        "text": {k: meta["text"][k] for k in ("cashtags", "emojis")},
    }


def summarize(artifact: Path, wall: float | None, levers: list[dict[str, Any]]) -> dict[str, Any]:
    report = json.loads((artifact / "report" / "metrics.json").read_text(encoding="utf-8"))
    meta = json.loads((artifact / "cryptosent.json").read_text(encoding="utf-8"))
    cross = report["cross_domain"]
    per_source = report["per_source"]
    base_rows = {r["trained_on"]: r["test"] for r in cross["baseline"]}
    held_out: dict[str, Any] = {}
    for row in cross["model"]:
        for name, cell in row["test"].items():
            if cell["held_out"] and len(row["sources"]) == len(cross["sources"]) - 1:
                b = base_rows[row["trained_on"]][name]["macro_f1"]
                held_out[name] = {
                    "trained_on": row["trained_on"],
                    "model": cell["macro_f1"],
                    "baseline": b,
                    "margin": round(cell["macro_f1"] - b, 4),
                    "met": cell["macro_f1"] - b >= TARGET_HELD_OUT_MARGIN,
                }
    st = per_source.get("stocktwits")
    targets: dict[str, Any] = {
        "stocktwits_margin": None
        if st is None
        else round(st["macro_f1"] - st["baseline_macro_f1"], 4),
        "stocktwits_margin_target": TARGET_OWN_MARGIN,
        "held_out_margin_target": TARGET_HELD_OUT_MARGIN,
        "held_out": held_out,
        "ece_after_target": TARGET_ECE,
        "ece_after": {k: v["ece_after"] for k, v in per_source.items()},
        "wall_seconds": wall,
        "wall_seconds_target": TARGET_WALL_S,
    }
    if st is not None:
        targets["stocktwits_margin_met"] = targets["stocktwits_margin"] >= TARGET_OWN_MARGIN
    targets["held_out_margin_met"] = bool(held_out) and all(h["met"] for h in held_out.values())
    targets["ece_after_met"] = all(v <= TARGET_ECE for v in targets["ece_after"].values())
    targets["wall_met"] = None if wall is None else wall <= TARGET_WALL_S
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "artifact_model_version": meta["model_version"],
        "sources": meta["train_options"].get("sources"),
        "options": meta["train_options"]["train"],
        "text": meta["text"],
        "splits": {
            s: {
                k: meta["data"]["rows"].get(f"{s}.{k}")
                for k in ("kept", "kept_negative", "kept_positive")
            }
            for s in cross["sources"]
        },
        "rows": meta["data"]["rows"],
        "temperature": meta["temperature"],
        "per_source": per_source,
        "matrix": {
            "metric": cross["metric"],
            "model": cross["model"],
            "baseline": cross["baseline"],
        },
        "training": report["training"],
        "levers": levers,
        "targets": targets,
    }


def markdown(x: dict[str, Any]) -> str:
    names = [s["name"] for s in x["sources"]]
    base = {r["trained_on"]: r["test"] for r in x["matrix"]["baseline"]}
    lines = [
        "## Multi-source training and cross-domain matrix"
        + ("" if x["options"]["base_model"] == "minilm" else f" ({x['options']['base_model']})"),
        "",
        f"- date: {x['date']}; command: `{x.get('command', 'n/a')}`",
        f"- sources: {', '.join(names)}; rows: max_samples {x['options']['max_samples']} "
        f"(train/val/test {x['rows'].get('train')}/{x['rows'].get('val')}/{x['rows'].get('test')})"
        f"; options: lr {x['options']['learning_rate']}, epochs "
        f"{x['options']['epochs']}, batch {x['options']['batch_size']}, max_length "
        f"{x['options']['max_length']}, source_balance {x['options']['source_balance']}, "
        f"label_smoothing {x['options']['label_smoothing']}; checkpoint on mean per-source "
        "validation macro-F1",
        f"- wall time of the whole run (main model + cross-domain models in "
        f"{x.get('workers', 'n/a')} worker process(es), evaluation, reports): "
        f"{x['targets']['wall_seconds']} s on "
        f"{x.get('machine', {}).get('cpu', 'this machine')}, {x.get('machine', {}).get('cores')} "
        "cores",
        "",
        "### Test splits of each source (model trained on all sources)",
        "",
        "| source | rows | fine-tuned macro-F1 | TF-IDF + LR | ECE before T | ECE after T |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in x["per_source"].items():
        lines.append(
            f"| {name} | {m['n']} | {m['macro_f1']:.4f} | {m['baseline_macro_f1']:.4f} | "
            f"{m['ece_before']:.4f} | {m['ece_after']:.4f} |"
        )
    lines += [
        "",
        "### Train on X → test on Y (macro-F1, fine-tuned / TF-IDF + LR; * = held out)",
        "",
        "| trained on | " + " | ".join(names) + " |",
        "|---|" + "|".join("---" for _ in names) + "|",
    ]
    for row in x["matrix"]["model"]:
        cells = []
        for name in names:
            m = row["test"][name]
            b = base[row["trained_on"]][name]
            star = "*" if m["held_out"] else ""
            cells.append(f"{m['macro_f1']:.4f} / {b['macro_f1']:.4f}{star}")
        lines.append(f"| {row['trained_on']} | " + " | ".join(cells) + " |")
    if x["levers"]:
        lines += [
            "",
            "### Levers (short runs, validation only)",
            "",
            "| lever | rows | epochs | best mean per-source val macro-F1 | per source | curve |"
            " live weights (with EMA) |",
            "|---|---|---|---|---|---|---|",
        ]
        for lv in x["levers"]:
            per = ", ".join(f"{v:.3f}" for v in lv["val_per_source"].values())
            live = lv.get("best_val_live")
            lines.append(
                f"| {lv['lever']} | {lv['options']['max_samples'] or 'all'} | "
                f"{lv['options']['epochs']} | {lv['best_val']:.4f} (epoch {lv['best_epoch']}) | "
                f"{per} | {' → '.join(str(c) for c in lv['curve'])} | "
                + ("-" if live is None else f"best {live:.4f}: ")
                + " → ".join(str(c) for c in lv.get("curve_live") or [])
                + " |"
            )
    if x.get("note"):
        lines += ["", x["note"]]
    lines += ["", "### Targets", "", "```json", json.dumps(x["targets"], indent=2), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    passthrough = raw[raw.index("--") + 1 :] if "--" in raw else []
    own = raw[: raw.index("--")] if "--" in raw else raw
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", action="append", default=[])
    p.add_argument("--artifact", type=Path, default=ROOT / "models" / "bench-cross-domain")
    p.add_argument("--wall-seconds", type=float, default=None)
    p.add_argument("--lever", action="append", default=[], metavar="NAME=ARTIFACT")
    p.add_argument("--note", default=None)
    p.add_argument("--key", default=KEY, help="train_quality.json key (and .md section)")
    p.add_argument("--command", default=None, help="reading back: the command that trained it")
    p.add_argument("--workers", type=int, default=None, help="reading back: its worker count")
    args = p.parse_args(own)
    wall = args.wall_seconds
    command = args.command or " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    if args.csv:
        from cryptosent.cli import main as cli

        cmd = ["train", *[x for c in args.csv for x in ("--csv", c)], "--cross-domain"]
        cmd += ["--out", str(args.artifact), "--overwrite", *passthrough]
        t0 = time.perf_counter()
        if cli(cmd) != 0:
            return 1
        wall = round(time.perf_counter() - t0, 1)
        command = "cryptosent " + " ".join(shlex.quote(a) for a in cmd)
    levers = [
        lever_summary(name, Path(path))
        for name, path in (spec.split("=", 1) for spec in args.lever)
    ]
    summary = summarize(args.artifact, wall, levers)
    summary["command"] = command
    if args.workers is not None:
        summary["workers"] = args.workers
    if args.csv:
        # Parsed as `cryptosent train` does, so `--cross-domain-workers=2` and its default count.
        workers = argparse.ArgumentParser(add_help=False)
        workers.add_argument("--cross-domain-workers", type=int, default=0)
        summary["workers"] = workers.parse_known_args(passthrough)[0].cross_domain_workers
    summary["machine"] = {"cpu": _cpu(), "cores": os.cpu_count(), "platform": platform.platform()}
    if args.note:
        summary["note"] = args.note
    json_path = RESULTS / "train_quality.json"
    current = json.loads(json_path.read_text("utf-8")) if json_path.is_file() else {}
    current[args.key] = summary
    json_path.write_text(json.dumps(current, indent=2) + "\n", "utf-8")
    md_path = RESULTS / "train_quality.md"
    md = md_path.read_text("utf-8") if md_path.is_file() else ""
    md_path.write_text(replace_section(md, args.key, markdown(summary)), "utf-8")
    print(json.dumps(summary["targets"], indent=2))
    return 0


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
